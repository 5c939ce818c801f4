"""Members' own defaults for /imagine: the `member_defaults` table."""

from __future__ import annotations

from collections.abc import Callable

from bot.domain import MemberDefaults, parse_aspect_ratio, parse_resolution
from bot.store.sql import Row, SqlDatabase

DM_KEY = 0  # direct messages: one "server" per member, as in caps and counts


def _key(guild_id: int | None) -> int:
    return DM_KEY if guild_id is None else guild_id


def _defaults(row: Row) -> MemberDefaults:
    ratio, size = row["aspect_ratio"], row["resolution"]
    return MemberDefaults(
        aspect_ratio=parse_aspect_ratio(ratio) if ratio is not None else None,
        resolution=parse_resolution(size) if size is not None else None,
        private=bool(row["private"]),
        model=row["model"],
        count=row["count"],
    )


class SqlMemberSettings:
    """The `MemberSettings` over SQL: one row per member and server, absent until set.

    Read by `/imagine` and the result buttons before each request, written by `/settings`.
    Built by `open_storage`; lives as long as the database.
    """

    def __init__(self, database: SqlDatabase, clock: Callable[[], float]) -> None:
        self._db = database
        self._clock = clock

    async def defaults(self, user_id: int, guild_id: int | None) -> MemberDefaults:
        rows = await self._db.lookup(
            "SELECT aspect_ratio, resolution, private, model, count FROM member_defaults"
            " WHERE user_id = ? AND guild_key = ?",
            (user_id, _key(guild_id)),
        )
        return _defaults(rows[0]) if rows else MemberDefaults()

    async def set_defaults(
        self, user_id: int, guild_id: int | None, defaults: MemberDefaults
    ) -> None:
        await self._db.execute(
            "INSERT INTO member_defaults"
            " (user_id, guild_key, aspect_ratio, resolution, private, model, count, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (user_id, guild_key) DO UPDATE SET"
            " aspect_ratio = excluded.aspect_ratio, resolution = excluded.resolution,"
            " private = excluded.private, model = excluded.model, count = excluded.count,"
            " updated_at = excluded.updated_at",
            (
                user_id,
                _key(guild_id),
                defaults.aspect_ratio,
                defaults.resolution,
                defaults.private,
                defaults.model,
                defaults.count,
                self._clock(),
            ),
        )

    async def clear_defaults(self, user_id: int, guild_id: int | None) -> bool:
        return await self._db.changed(
            "DELETE FROM member_defaults WHERE user_id = ? AND guild_key = ?",
            (user_id, _key(guild_id)),
        )
