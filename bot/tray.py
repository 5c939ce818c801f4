"""The reference tray: images a member picked with "Use as reference", kept for an hour per
member per server, which their next `/imagine` adds to its references and then empties.

The images are checked (type and size, as the `image` option is) when they are added, from what
Discord reports about each attachment: an attachment never changes, and its signed link outlives
the tray's hour by far, so a check at use would find the same. The tray keeps only what a
request needs (the link) and what the member is shown (the file name).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.domain import REFERENCES_MAX, ImageRequest, TrayAdded, TrayImage
from bot.store.interfaces import ReferenceTrays

TRAY_SECONDS = 3600.0


@dataclass(frozen=True)
class TooManyReferences:
    """A request whose own images and tray together are more than kie.ai takes."""

    given: int  # the command's own image options
    in_tray: int
    limit: int = REFERENCES_MAX


def with_tray(image: ImageRequest, tray: Sequence[TrayImage]) -> ImageRequest | TooManyReferences:
    """`image` with the tray's images after its own references, or why not (too many)."""
    if not tray:
        return image
    given = len(image.reference_urls)
    if given + len(tray) > REFERENCES_MAX:
        return TooManyReferences(given, len(tray))
    urls = (*image.reference_urls, *(item.url for item in tray))
    return dataclasses.replace(image, reference_urls=urls)


class ReferenceTray:
    """Adds to, reads and empties members' trays (`ReferenceTrays`), owning the clock and the
    hour. Built once by the composition root; used by the "Use as reference" and `/imagine`
    cogs. A tray is per member and server; direct messages are one more "server" (key 0)."""

    def __init__(
        self,
        trays: ReferenceTrays,
        *,
        clock: Callable[[], float] = time.time,
        lifetime: float = TRAY_SECONDS,
    ) -> None:
        self._trays = trays
        self._clock = clock
        self.lifetime = lifetime
        self.capacity = REFERENCES_MAX

    async def add(
        self, user_id: int, guild_id: int | None, images: Sequence[TrayImage]
    ) -> TrayAdded:
        now = self._clock()
        stamped = [dataclasses.replace(image, added_at=now) for image in images]
        since = now - self.lifetime
        return await self._trays.add(user_id, guild_id or 0, stamped, since, self.capacity)

    async def contents(self, user_id: int, guild_id: int | None) -> list[TrayImage]:
        """The member's unexpired images here, oldest first."""
        return await self._trays.tray(user_id, guild_id or 0, self._clock() - self.lifetime)

    async def empty(self, user_id: int, guild_id: int | None, taken: Sequence[TrayImage]) -> None:
        """Take out what a request used (images added since stay for the next one)."""
        if taken:
            await self._trays.remove(user_id, guild_id or 0, [image.key for image in taken])

    def expires_at(self, image: TrayImage) -> float:
        return image.added_at + self.lifetime
