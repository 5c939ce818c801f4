"""Servers' own kie.ai keys in SQL: the `server_kie_keys` table, sealed values only."""

from __future__ import annotations

from typing import Any

from bot.domain import SealedKey
from bot.store.sql import SqlDatabase

_COLUMNS = "guild_id, sealed, last_four, set_by, set_at"


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
