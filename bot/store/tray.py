"""Members' reference trays in SQL: the `reference_tray` table."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain import TrayAdded, TrayImage
from bot.store.sql import Row, SqlDatabase


def _image(row: Row) -> TrayImage:
    return TrayImage(
        key=row["image_key"], url=row["url"], filename=row["filename"], added_at=row["added_at"]
    )


_SELECT = (
    "SELECT image_key, url, filename, added_at FROM reference_tray"
    " WHERE user_id = ? AND guild_key = ? AND added_at > ? ORDER BY added_at, rowid"
)


class SqlReferenceTrays:
    """The `ReferenceTrays` over SQL: one row per image per member per server.

    Times are the caller's (`ReferenceTray` owns the clock and the hour); rows added at or
    before `since` are expired: never returned, and purged on the next add.
    """

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def tray(self, user_id: int, guild_key: int, since: float) -> list[TrayImage]:
        rows = await self._db.lookup(_SELECT, (user_id, guild_key, since))
        return [_image(row) for row in rows]

    async def add(
        self,
        user_id: int,
        guild_key: int,
        images: Sequence[TrayImage],
        since: float,
        room: int,
    ) -> TrayAdded:
        # One transaction: two adds at once cannot both see room for the last place.
        async with self._db.transaction() as db:
            await db.execute("DELETE FROM reference_tray WHERE added_at <= ?", (since,))
            held = [
                _image(row) for row in await self._db.rows(_SELECT, (user_id, guild_key, since))
            ]
            keys = {image.key for image in held}
            added: list[TrayImage] = []
            duplicates = no_room = 0
            for image in images:
                if image.key in keys:
                    duplicates += 1
                elif len(held) + len(added) >= room:
                    no_room += 1
                else:
                    await db.execute(
                        "INSERT INTO reference_tray"
                        " (user_id, guild_key, image_key, url, filename, added_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (user_id, guild_key, image.key, image.url, image.filename, image.added_at),
                    )
                    keys.add(image.key)
                    added.append(image)
        return TrayAdded(tuple(added), duplicates, no_room, (*held, *added))

    async def remove(self, user_id: int, guild_key: int, keys: Sequence[str]) -> None:
        if keys:
            await self._db.execute(
                "DELETE FROM reference_tray WHERE user_id = ? AND guild_key = ?"
                f" AND image_key IN ({', '.join('?' * len(keys))})",
                (user_id, guild_key, *keys),
            )
