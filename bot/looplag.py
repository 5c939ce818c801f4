"""Watching the event loop for stalls: stretches when the bot's own work kept it from answering.

A timer fires every `every` seconds; whatever it fires late by is time the loop spent busy with
something else. A bare timer callback, not a sleeping task: a task's step and future per tick
cost about a tenth of the bot's CPU in the benchmark's crowd, a callback a fraction of that.
It keeps the worst stall and counts those over `stall`; one that passes `warn_over` is logged
as a warning (at most once every `warn_every` seconds), and stopping logs one summary line,
which the benchmark reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class LoopLagMonitor:
    def __init__(
        self,
        *,
        every: float = 0.05,
        stall: float = 0.05,
        warn_over: float = 0.25,
        warn_every: float = 60.0,
        clock: Callable[[], float] = time.perf_counter,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        # A stall of s seconds shows up as at least s - `every`: sampling every 50 ms sees a
        # 200 ms stall as 150 ms or more, for 20 wake-ups a second (a few microseconds each).
        self.every = every
        self.stall = stall
        self.warn_over = warn_over
        self.warn_every = warn_every
        self._clock = clock
        self._observe = observe  # every sample, e.g. into the metrics' histogram
        self.worst = 0.0
        self.stalls = 0
        self._unreported = 0  # warnings held back by the rate limit
        self._last_warning = float("-inf")
        self._started = 0.0
        self._asleep = 0.0  # when the pending timer was set
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._started = self._clock()
        self._set_timer()

    async def stop(self) -> None:
        """Stop watching and log the summary line."""
        timer, self._timer = self._timer, None
        if timer is None:
            return
        timer.cancel()
        log.info(
            "event loop: worst stall %d ms, %d stalls over %d ms in %.0f s",
            round(self.worst * 1000),
            self.stalls,
            round(self.stall * 1000),
            self._clock() - self._started,
        )

    def _set_timer(self) -> None:
        self._asleep = self._clock()
        self._timer = asyncio.get_running_loop().call_later(self.every, self._woken)

    def _woken(self) -> None:
        lag = self._clock() - self._asleep - self.every
        self._set_timer()  # first: a failing observer must not end the watch
        self.record(lag)

    def record(self, lag: float) -> None:
        """Count one overshoot of the sleep."""
        if self._observe is not None:
            self._observe(max(0.0, lag))
        self.worst = max(self.worst, lag)
        if lag <= self.stall:
            return
        self.stalls += 1
        if lag <= self.warn_over:
            return
        now = self._clock()
        if now - self._last_warning < self.warn_every:
            self._unreported += 1
            return
        self._last_warning = now
        log.warning(
            "the event loop stalled for %d ms (%d more such stalls since the last warning)",
            round(lag * 1000),
            self._unreported,
        )
        self._unreported = 0
