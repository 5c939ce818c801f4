"""Client-side rate limiting: keep every caller inside a provider's documented limits.

kie.ai rejects (rather than queues) calls over its limits, so the bot queues them itself. Waiters
are served first come, first served, however many members are waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class SlidingWindowLimiter:
    """At most `max_calls` acquisitions in any `period` seconds, granted in arrival order.

    `margin` widens the window a little, because the server measures arrival times and the
    network can bunch requests up.
    """

    def __init__(
        self,
        max_calls: int,
        period: float,
        *,
        margin: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_calls < 1 or period <= 0:
            raise ValueError("a limiter needs at least one call per positive period")
        self._max_calls = max_calls
        self._window = period + margin
        self._clock = clock
        self._sleep = sleep
        self._granted: deque[float] = deque()
        # asyncio.Lock wakes waiters in FIFO order, which gives arrival-order fairness.
        self._turn = asyncio.Lock()

        self._waiting = 0

    @property
    def period(self) -> float:
        return self._window

    @property
    def waiting(self) -> int:
        """How many callers are waiting for a slot, including the one being served."""
        return self._waiting

    async def acquire(self) -> None:
        self._waiting += 1
        try:
            async with self._turn:
                await self._take_slot()
        finally:
            self._waiting -= 1

    async def _take_slot(self) -> None:
        while True:
            now = self._clock()
            while self._granted and now - self._granted[0] >= self._window:
                self._granted.popleft()
            if len(self._granted) < self._max_calls:
                self._granted.append(now)
                return
            await self._sleep(self._window - (now - self._granted[0]))

    def record_past(self, ages: list[float]) -> None:
        """Count calls made `ages` seconds ago (e.g. by the previous run of the bot)."""
        now = self._clock()
        past = sorted(now - age for age in ages if 0 <= age < self._window)
        self._granted = deque(sorted([*past, *self._granted])[-self._max_calls :])

    def delay(self, seconds: float) -> None:
        """Push the window forward after the server said we were too fast (e.g. a 429)."""
        now = self._clock()
        self._granted.clear()
        # Fill the window so nothing is granted until `seconds` have passed.
        stamp = now + seconds - self._window
        self._granted.extend([stamp] * self._max_calls)
