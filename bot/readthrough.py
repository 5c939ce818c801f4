"""Reads that many callers need at the same moment, made once: a per-key read-through cache.

In a burst, every command of a server asks for the same rows (its settings, bans, allowed
channels, blocked terms) within a few milliseconds. A plain "read if not cached" lets each of
them miss before the first read returns: dozens of identical queries, all in the window where
Discord's 3 seconds run. Here the first caller reads and the others wait for that read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadThrough(Generic[K, V]):
    """Values read by `load(key)`, kept until `drop`ped (or `max_age` seconds old).

    Callers asking while a read of their key is under way share it: its value, or its error
    (an error is not kept). A `drop` during a read keeps that read's value from being kept, since
    it may predate the change; its callers still get it, as they would have without the cache.
    A caller cancelled while waiting does not cancel the read the others wait for.
    """

    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        *,
        max_age: float | None = None,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._max_age = max_age
        self._max_keys = max_keys  # bounded: past it, everything is read again
        self._clock = clock
        self._kept: dict[K, tuple[float, V]] = {}  # key -> (read at, value)
        self._reading: dict[K, asyncio.Task[V]] = {}
        self._drops = 0  # counts `drop` calls: a read that saw one keeps nothing

    async def get(self, key: K) -> V:
        kept = self._kept.get(key)
        if kept is not None and (self._max_age is None or self._clock() - kept[0] < self._max_age):
            return kept[1]
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.create_task(self._read(key, self._drops, self._clock()))
            reading.add_done_callback(_retrieve)
            self._reading[key] = reading
        return await asyncio.shield(reading)

    def drop(self, key: K | None = None) -> None:
        """Forget `key` (None: every key); the next `get` reads again."""
        self._drops += 1
        if key is None:
            self._kept.clear()
            self._reading.clear()
        else:
            self._kept.pop(key, None)
            self._reading.pop(key, None)

    async def _read(self, key: K, drops: int, started: float) -> V:
        try:
            value = await self._load(key)
            if drops == self._drops:
                if len(self._kept) >= self._max_keys:
                    self._kept.clear()
                self._kept[key] = (started, value)
            return value
        finally:
            if self._reading.get(key) is asyncio.current_task():
                del self._reading[key]


def _retrieve(task: asyncio.Task[object]) -> None:
    # Every caller may have been cancelled: the error is theirs to see, not the loop's to log.
    if not task.cancelled():
        task.exception()
