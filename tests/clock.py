"""The one fake clock for tests that move time by hand.

Code under test takes its clock (and, where it waits, its sleep) as parameters; a test passes a
`FakeClock` for both, so an hour passes in no time and every assertion can name the exact moment.
"""

from __future__ import annotations

import asyncio


class FakeClock:
    """A clock that moves only when the test advances it, or when someone sleeps on it.

    Call it for the time (`clock()`), like `time.monotonic` or `time.time`; `advance(seconds)` or
    assigning `now` moves it; `await clock.sleep(seconds)` lets every task already woken run
    first, as a real sleep would, then moves the clock by `seconds`.
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        self.now += max(seconds, 0.0)
