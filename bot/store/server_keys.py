"""Servers' own kie.ai keys in SQL: the `server_kie_keys` table, and `retired_kie_keys` (keys
replaced or removed while jobs sent with them were open), sealed values only."""

from __future__ import annotations

from typing import Any

from bot.domain import RetiredKey, SealedKey
from bot.store.jobs import _OPEN_SQL
from bot.store.sql import SqlDatabase

_COLUMNS = "guild_id, sealed, last_four, set_by, set_at"


_RETIRED_COLUMNS = "fingerprint, guild_id, sealed, retired_at"
# Whether an open job was sent with the retired key `retired_kie_keys.fingerprint` (the open
# states written out, and `kie_account =` implying the partial index's NOT NULL: an index seek).
_IN_USE = f"""EXISTS (SELECT 1 FROM jobs WHERE kie_account = retired_kie_keys.fingerprint
                     AND {_OPEN_SQL})"""


def _retired(row: Any) -> RetiredKey:
    return RetiredKey(
        fingerprint=str(row["fingerprint"]),
        guild_id=int(row["guild_id"]),
        sealed=str(row["sealed"]),
        retired_at=float(row["retired_at"]),
    )


def _key(row: Any) -> SealedKey:
    return SealedKey(
        guild_id=int(row["guild_id"]),
        sealed=str(row["sealed"]),
        last_four=str(row["last_four"]),
        set_by=int(row["set_by"]),
        set_at=float(row["set_at"]),
    )


class SqlServerKeys:
    """The `ServerKeys` over SQL. Built by `open_storage`; lives as long as the database."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def server_key(self, guild_id: int) -> SealedKey | None:
        rows = await self._db.rows(
            f"SELECT {_COLUMNS} FROM server_kie_keys WHERE guild_id = ?", (guild_id,)
        )
        return _key(rows[0]) if rows else None

    async def server_keys(self) -> list[SealedKey]:
        rows = await self._db.rows(f"SELECT {_COLUMNS} FROM server_kie_keys ORDER BY guild_id")
        return [_key(row) for row in rows]

    async def put_server_key(self, key: SealedKey) -> None:
        await self._db.execute(
            f"INSERT INTO server_kie_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (guild_id) DO UPDATE SET sealed = excluded.sealed,"
            " last_four = excluded.last_four, set_by = excluded.set_by,"
            " set_at = excluded.set_at",
            (key.guild_id, key.sealed, key.last_four, key.set_by, key.set_at),
        )

    async def delete_server_key(self, guild_id: int) -> bool:
        return await self._db.changed("DELETE FROM server_kie_keys WHERE guild_id = ?", (guild_id,))

    async def retire_server_key(self, retired: RetiredKey, replacement: SealedKey | None) -> bool:
        """In one transaction: the server's key, if it is still `retired.sealed`, moves to
        `retired_kie_keys` (for the jobs sent with it), and `replacement`, if any, becomes
        its key. False when its key was another one by then (nothing changed)."""
        async with self._db.transaction() as db:
            found = await self._db.rows(
                "SELECT guild_id FROM server_kie_keys WHERE guild_id = ? AND sealed = ?"
                + self._db.lock_rows,
                (retired.guild_id, retired.sealed),
            )
            if not found:
                return False
            await db.execute("DELETE FROM server_kie_keys WHERE guild_id = ?", (retired.guild_id,))
            await db.execute(
                f"INSERT INTO retired_kie_keys ({_RETIRED_COLUMNS}) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (fingerprint) DO UPDATE SET guild_id = excluded.guild_id,"
                " sealed = excluded.sealed, retired_at = excluded.retired_at",
                (retired.fingerprint, retired.guild_id, retired.sealed, retired.retired_at),
            )
            if replacement is not None:
                await db.execute(
                    f"INSERT INTO server_kie_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    (
                        replacement.guild_id,
                        replacement.sealed,
                        replacement.last_four,
                        replacement.set_by,
                        replacement.set_at,
                    ),
                )
        return True

    async def retired_keys(self) -> list[RetiredKey]:
        rows = await self._db.rows(
            f"SELECT {_RETIRED_COLUMNS} FROM retired_kie_keys ORDER BY fingerprint"
        )
        return [_retired(row) for row in rows]

    async def sweep_retired_keys(self) -> list[str]:
        """Delete the retired keys no open job was sent with: their fingerprints. Each one is
        checked again as it is deleted, so a job sent with it meanwhile keeps it."""
        rows = await self._db.rows(f"SELECT fingerprint FROM retired_kie_keys WHERE NOT {_IN_USE}")
        swept: list[str] = []
        for row in rows:
            if await self._db.changed(
                f"DELETE FROM retired_kie_keys WHERE fingerprint = ? AND NOT {_IN_USE}",
                (row["fingerprint"],),
            ):
                swept.append(str(row["fingerprint"]))
        return swept
