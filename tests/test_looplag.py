"""The loop-lag monitor: sees a blocked event loop, warns sparingly, sums up at the end."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from bot.looplag import LoopLagMonitor


async def test_a_callback_that_blocks_the_loop_shows_up_as_a_stall(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = LoopLagMonitor()
    with caplog.at_level(logging.INFO, logger="bot.looplag"):
        monitor.start()
        await asyncio.sleep(0)  # the monitor is asleep now
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)
        await asyncio.sleep(0.4)
        await monitor.stop()
    # Sampling every 50 ms sees a 300 ms stall as at least 250 ms.
    assert monitor.worst >= 0.25
    assert monitor.stalls >= 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "the event loop stalled for" in warnings[0]
    summary = caplog.records[-1].getMessage()
    assert caplog.records[-1].levelno == logging.INFO
    assert re.fullmatch(
        rf"event loop: worst stall {round(monitor.worst * 1000)} ms, "
        rf"{monitor.stalls} stalls over 50 ms in \d+ s",
        summary,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_long_stalls_are_warned_about_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    monitor = LoopLagMonitor(clock=clock)
    with caplog.at_level(logging.WARNING, logger="bot.looplag"):
        for lag in (0.3, 0.4, 0.1, 0.02, 0.5):
            monitor.record(lag)
            clock.now += 10
        clock.now += 60
        monitor.record(0.26)
    assert [r.getMessage() for r in caplog.records] == [
        "the event loop stalled for 300 ms (0 more such stalls since the last warning)",
        "the event loop stalled for 260 ms (2 more such stalls since the last warning)",
    ]
    assert (monitor.worst, monitor.stalls) == (0.5, 5)


def test_short_lags_are_neither_stalls_nor_warnings(caplog: pytest.LogCaptureFixture) -> None:
    monitor = LoopLagMonitor(clock=Clock())
    with caplog.at_level(logging.WARNING, logger="bot.looplag"):
        for lag in (0.001, 0.05, 0.0):
            monitor.record(lag)
    assert (monitor.worst, monitor.stalls, caplog.records) == (0.05, 0, [])
