"""Commands still waiting for their first answer, so that cosmetic work can step aside.

In a burst, every command must be acknowledged within Discord's 3 seconds, and the bot has one
event loop. A progress edit of a job admitted a moment ago ("Position 12 in line") costs about
as much as an acknowledgement; sent while later commands still wait for theirs, it makes them
late. `Generation` counts the commands between their arrival and their answer here, and the
replies' progress edits wait (`clear`) until none is left, or for a bounded time, so a steady
stream of commands delays a member's progress but never hides it.
"""

from __future__ import annotations

import asyncio
import contextlib

# Longest a progress edit defers to unanswered commands: under a steady stream of commands the
# line still moves on screen.
YIELD_SECONDS = 3.0


class AnswerBacklog:
    """How many commands are waiting for their first answer (acknowledgement or refusal)."""

    def __init__(self) -> None:
        self._waiting = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @property
    def waiting(self) -> int:
        return self._waiting

    def arrived(self) -> None:
        self._waiting += 1
        self._clear.clear()

    def answered(self) -> None:
        self._waiting -= 1
        if self._waiting <= 0:
            self._waiting = 0
            self._clear.set()

    async def clear(self, patience: float = YIELD_SECONDS) -> None:
        """Return once no command waits for its answer, or after `patience` seconds."""
        if self._clear.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(patience):
                await self._clear.wait()
