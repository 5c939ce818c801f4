"""Watching the event loop for stalls: stretches when the bot's own work kept it from answering.

A task sleeps `every` seconds over and over; whatever it oversleeps by is time the loop spent
busy with something else. It keeps the worst stall and counts those over `stall`; one that passes
`warn_over` is logged as a warning (at most once every `warn_every` seconds), and stopping logs one
summary line, which the benchmark reads.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._started = self._clock()
        self._task = asyncio.create_task(self._watch(), name="loop-lag")

    async def stop(self) -> None:
        """Stop watching and log the summary line."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info(
            "event loop: worst stall %d ms, %d stalls over %d ms in %.0f s",
            round(self.worst * 1000),
            self.stalls,
            round(self.stall * 1000),
            self._clock() - self._started,
        )

    async def _watch(self) -> None:
        while True:
            asleep = self._clock()
            await asyncio.sleep(self.every)
            self.record(self._clock() - asleep - self.every)

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
