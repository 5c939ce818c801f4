"""Runs the bot as `python -m bot` would, watching its garbage collector: each collection's
pause (`gc.callbacks`) is written at exit, as JSON, to the file named by `GC_PAUSES_FILE`.

The harness's instrument, not the bot's: the bot is run unchanged (`runpy`), and the benchmark
reads the pauses that fell within a scenario's burst (`BotProcess.gc_pauses`). A pause is the
time the event loop's thread spent inside one collection, so any over 50 ms is a stall of the
bot's own making.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import sys
import time
from pathlib import Path

GC_PAUSES_FILE = "IMAGINE_BENCH_GC_PAUSES"  # the environment variable naming the file


def main() -> None:
    target = Path(os.environ.pop(GC_PAUSES_FILE))
    pauses: list[tuple[float, float, int]] = []  # (monotonic end, seconds, generation)
    began = 0.0

    def watch(phase: str, info: dict[str, int]) -> None:
        nonlocal began
        if phase == "start":
            began = time.perf_counter()
        else:
            pauses.append((time.monotonic(), time.perf_counter() - began, info["generation"]))

    def write() -> None:
        target.write_text(json.dumps(pauses))

    gc.callbacks.append(watch)
    atexit.register(write)
    sys.path.pop(0)  # this file's folder: the bot imports its own modules only
    runpy.run_module("bot", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
