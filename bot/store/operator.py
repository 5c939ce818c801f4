"""The operator's records in SQL: `server_caps`, `banned_users`, `banned_servers` and
`owner_log`."""

from __future__ import annotations

from bot.domain import OwnerAction
from bot.store.interfaces import BanList
from bot.store.sql import SqlDatabase

# Each ban list's table and key column (constants, so they are safe to write into SQL).
_BAN_TABLES = {
    BanList.USERS: ("banned_users", "user_id"),
    BanList.SERVERS: ("banned_servers", "guild_id"),
}


class SqlOperatorRecords:
    """The `OperatorRecords` over SQL: the caps, bans and action log of `/owner`.

    `OperatorControls` is its only caller (and keeps caps and bans in memory, since one process
    owns a database). Built by `open_storage`; lives as long as the database.
    """

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def server_caps(self) -> dict[int, int]:
        rows = await self._db.rows("SELECT guild_key, daily_cap FROM server_caps")
        return {int(row["guild_key"]): int(row["daily_cap"]) for row in rows}

    async def set_server_cap(self, guild_key: int, cap: int | None) -> None:
        if cap is None:
            await self._db.execute("DELETE FROM server_caps WHERE guild_key = ?", (guild_key,))
        else:
            await self._db.execute(
                "INSERT INTO server_caps (guild_key, daily_cap) VALUES (?, ?)"
                " ON CONFLICT (guild_key) DO UPDATE SET daily_cap = excluded.daily_cap",
                (guild_key, cap),
            )

    async def ban_everywhere(self, banned: BanList, key: int, reason: str | None) -> bool:
        """Ban a user or a server everywhere; False if it already was."""
        table, column = _BAN_TABLES[banned]
        return await self._db.changed(
            f"INSERT INTO {table} ({column}, reason) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (key, reason),
        )

    async def unban_everywhere(self, banned: BanList, key: int) -> bool:
        table, column = _BAN_TABLES[banned]
        return await self._db.changed(f"DELETE FROM {table} WHERE {column} = ?", (key,))

    async def banned_everywhere(self, banned: BanList) -> set[int]:
        """Every user (or server) the owner banned."""
        table, column = _BAN_TABLES[banned]
        return {int(row[column]) for row in await self._db.rows(f"SELECT {column} FROM {table}")}

    async def log_owner_action(self, actor: int, action: str, target: str, detail: str) -> None:
        await self._db.execute(
            "INSERT INTO owner_log (actor_id, action, target, detail, at) VALUES (?, ?, ?, ?, ?)",
            (actor, action, target[:200], detail[:1000], self._db.clock()),
        )

    async def owner_actions(self, limit: int) -> list[OwnerAction]:
        """The owner's latest actions, newest first."""
        rows = await self._db.rows(
            "SELECT actor_id, action, target, detail, at FROM owner_log ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            OwnerAction(
                int(row["actor_id"]),
                str(row["action"]),
                str(row["target"] or ""),
                str(row["detail"] or ""),
                float(row["at"]),
            )
            for row in rows
        ]
