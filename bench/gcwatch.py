"""Runs the bot as `python -m bot` would, watching its garbage collector: each collection's
pause (`gc.callbacks`) is written at exit, as JSON, to the file named by `GC_PAUSES_FILE`.

The harness's instrument, not the bot's: the bot is run unchanged (`runpy`), and the benchmark
reads the pauses that fell within a scenario's burst (`BotProcess.gc_pauses`). A pause is the
time the event loop's thread spent inside one collection, so any over 50 ms is a stall of the
bot's own making.

A burst is too short for a full collection to come by itself, yet one comes sooner or later
while the line drains, and it walks every object the waiting jobs hold. So on SIGUSR2 the
bot's event loop runs one (`gc.collect()`) between two callbacks, as the collector would, and
its duration is written too (`BotProcess.full_collections`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import os
import runpy
import signal
import sys
import time
from pathlib import Path

GC_PAUSES_FILE = "IMAGINE_BENCH_GC_PAUSES"  # the environment variable naming the file


def main() -> None:
    target = Path(os.environ.pop(GC_PAUSES_FILE))
    pauses: list[tuple[float, float, int]] = []  # (monotonic end, seconds, generation)
    # Each full collection asked for with SIGUSR2: (seconds, CPU seconds of the loop's thread).
    # The two differ when this 2-core machine's other processes (the harness, the fakes) took
    # the core meanwhile.
    full: list[tuple[float, float]] = []
    began = 0.0

    def watch(phase: str, info: dict[str, int]) -> None:
        nonlocal began
        if phase == "start":
            began = time.perf_counter()
        else:
            pauses.append((time.monotonic(), time.perf_counter() - began, info["generation"]))

    def write() -> None:
        target.write_text(json.dumps({"pauses": pauses, "full": full}))

    def collect_fully() -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        gc.collect()
        full.append((time.perf_counter() - started, time.thread_time() - cpu))

    def on_signal(_signal: int, _frame: object) -> None:
        # A signal handler may run inside a collection's own callbacks, where gc.collect()
        # would do nothing: the loop runs it instead, between two of its callbacks.
        with contextlib.suppress(RuntimeError):  # no loop running yet (or any more)
            asyncio.get_running_loop().call_soon_threadsafe(collect_fully)

    gc.callbacks.append(watch)
    atexit.register(write)
    signal.signal(signal.SIGUSR2, on_signal)
    sys.path.pop(0)  # this file's folder: the bot imports its own modules only
    runpy.run_module("bot", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
