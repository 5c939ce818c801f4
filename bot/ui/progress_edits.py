"""`ProgressEdits`: every job reply's progress edits, sent a few at a time by one dispatcher.

A reply with progress to show waits here as an entry in a heap (when it is due, and the reply),
not as a task of its own, and at most `EDITS_AT_ONCE` edits are on the wire together. In a
burst, thousands of "position N" edits fall due in the same second: as a task each, with its
HTTP request built and queued for one of discord.py's connections, every one of them held about
fifty objects that the garbage collector walked on each pass while they waited, and its pauses
grew with the line. Here a waiting edit is a heap entry and a reply that already exists.

Edits yield to commands still waiting for their first answer (Discord gives those 3 s; a place
in line shown a second later costs nothing), each at most `patience` seconds from when it fell
due, so a steady stream of commands never hides every job's progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

# Edits on the wire at once: half of discord.py's connections (DISCORD_CONNECTIONS_PER_HOST),
# so a delivery or a follow-up never queues behind a wave of progress edits.
EDITS_AT_ONCE = 32
# The longest a due edit waits for the commands still unanswered.
PROGRESS_YIELDS_AT_MOST = 10.0


class ProgressEdit(Protocol):
    async def send_progress(self) -> None:
        """Show the newest progress not shown yet, if any (one edit at most)."""


class ProgressEdits:
    """One per bot, shared by every reply. `schedule` says a reply has progress to show after
    a delay; the dispatcher calls its `send_progress` once that is due and a slot is free."""

    def __init__(
        self,
        *,
        at_once: int = EDITS_AT_ONCE,
        until_answered: Callable[[float], Awaitable[None]] | None = None,
        patience: float = PROGRESS_YIELDS_AT_MOST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._until_answered = until_answered
        self._patience = patience
        self._clock = clock
        self._slots = asyncio.Semaphore(at_once)
        self._due: list[tuple[float, int, ProgressEdit]] = []  # (due, arrival, edit)
        self._arrivals = itertools.count()  # equal due times keep their order
        self._earlier = asyncio.Event()  # an entry due sooner than the one slept for
        self._dispatcher: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        """Edits waiting for their turn (not those on the wire)."""
        return len(self._due)

    def schedule(self, edit: ProgressEdit, delay: float) -> None:
        if self._closed:
            return
        due = self._clock() + max(0.0, delay)
        heapq.heappush(self._due, (due, next(self._arrivals), edit))
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name="progress-edits")
        elif self._due[0][2] is edit:
            self._earlier.set()

    async def close(self) -> None:
        """The bot is stopping: nothing more is sent, and edits on the wire are cut."""
        self._closed = True
        self._due.clear()
        tasks = [*self._sending, *([self._dispatcher] if self._dispatcher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch(self) -> None:
        try:
            while self._due:
                due = self._due[0][0]
                delay = due - self._clock()
                if delay > 0:
                    self._earlier.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._earlier.wait()
                    continue
                if self._until_answered is not None:
                    await self._until_answered(max(0.0, due + self._patience - self._clock()))
                await self._slots.acquire()
                if not self._due:  # closed meanwhile
                    self._slots.release()
                    break
                # The earliest entry: the one waited for, or one pushed since, due as soon.
                _, _, edit = heapq.heappop(self._due)
                sending = asyncio.create_task(self._send(edit), name="progress-edit")
                self._sending.add(sending)
                sending.add_done_callback(self._sending.discard)
        finally:
            self._dispatcher = None

    async def _send(self, edit: ProgressEdit) -> None:
        try:
            await edit.send_progress()
        except Exception:
            # The reply handles Discord's answers itself; anything else is a bug, logged
            # without stopping the other replies' edits.
            log.exception("a progress edit failed")
        finally:
            self._slots.release()
