"""Small named values in SQL: the `meta` table."""

from __future__ import annotations

from bot.store.sql import SqlDatabase


class SqlKeyValues:
    """The `KeyValues` over SQL: values that must survive a restart, one row each.

    `OperatorControls` keeps the pause here, `OperatorAlerts` when each alert last went out,
    and the bot the fingerprint of the commands it last synced. Built by `open_storage`; lives
    as long as the database.
    """

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def get(self, key: str) -> str | None:
        rows = await self._db.rows("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    async def set(self, key: str, value: str) -> None:
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def compare_and_set(self, key: str, expected: str | None, value: str) -> bool:
        # One conditional statement each way: the database decides which process won.
        if expected is None:
            return await self._db.changed(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, value),
            )
        return await self._db.changed(
            "UPDATE meta SET value = ? WHERE key = ? AND value = ?", (value, key, expected)
        )

    async def with_prefix(self, prefix: str) -> dict[str, str]:
        # A range rather than LIKE: `_` and `%` in a prefix mean nothing here, and the
        # primary key's index serves it.
        after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = await self._db.rows(
            "SELECT key, value FROM meta WHERE key >= ? AND key < ?", (prefix, after)
        )
        return {str(row["key"]): str(row["value"]) for row in rows}

    async def delete(self, key: str) -> None:
        await self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
