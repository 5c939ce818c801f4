"""kie.ai's rate limits shared by several processes through PostgreSQL (`bot.ratebudget`):
however many processes take slots for one key at once, never more than the limit in any
window by the database's clock; a 429 holds every process back; a process killed mid-call
holds its slots only until they expire. Each "process" here has its own connection pool (and
limiter), as a separate process would; one test kills a real one."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.kie.ratelimit import SlidingWindowLimiter
from bot.ratebudget import SharedWindow, SharedWindows, account_fingerprint
from bot.store import PostgresTarget, Storage, open_storage

ROOT = Path(__file__).resolve().parent.parent
KEY = "shared-test-key-0123456789abcdef"


@pytest.fixture
async def processes(postgres_target: PostgresTarget) -> AsyncIterator[list[Storage]]:
    """Three storages on one database: three processes' worth of connection pools."""
    storages = [await open_storage(postgres_target) for _ in range(3)]
    yield storages
    for storage in storages:
        await storage.close()


def limiter_for(
    storage: Storage, max_calls: int, period: float, key: str = KEY, kind: str = "submit"
) -> SlidingWindowLimiter:
    assert storage.rate_windows is not None, "PostgreSQL shares its rate windows"
    limiter = SlidingWindowLimiter(max_calls, period)
    limiter.share(
        SharedWindows(storage.rate_windows, request_timeout=5.0).budget(key, kind, limiter)
    )
    return limiter


async def database_now(storage: Storage) -> float:
    rows = await storage.backend.rows(  # type: ignore[attr-defined]
        "SELECT extract(epoch FROM clock_timestamp())::float8"
    )
    return float(rows[0][0])


def most_in_any_window(arrivals: list[float], window: float) -> int:
    """The most arrivals that fall within any `window` seconds."""
    arrivals = sorted(arrivals)
    most = 0
    for i, start in enumerate(arrivals):
        most = max(most, sum(1 for at in arrivals[i:] if at - start < window))
    return most


async def test_concurrent_takers_in_several_processes_never_exceed_the_limit(
    processes: list[Storage],
) -> None:
    max_calls, period = 5, 0.4
    limiters = [limiter_for(storage, max_calls, period) for storage in processes]
    arrivals: list[float] = []

    async def call(n: int) -> None:
        storage = processes[n % len(processes)]
        async with limiters[n % len(limiters)].use(key=n % 7):
            # When "kie.ai" sees the call, by the database's clock, then a call of some length.
            arrivals.append(await database_now(storage))
            await asyncio.sleep(random.uniform(0, 0.03))

    started = time.monotonic()
    await asyncio.gather(*(call(n) for n in range(45)))
    took = time.monotonic() - started
    assert len(arrivals) == 45
    assert most_in_any_window(arrivals, period) <= max_calls
    # The limit really bound: 45 calls at 5 per 0.4 s need at least 8 full windows, where
    # three unshared limiters would have let 15 through in each.
    assert took >= 8 * period


async def test_each_key_and_kind_has_its_own_window(processes: list[Storage]) -> None:
    one, other = processes[0], processes[1]
    limiters = [
        limiter_for(one, 2, 30.0),
        limiter_for(other, 2, 30.0, key="another-key-0123456789"),
        limiter_for(other, 2, 30.0, kind="query"),
    ]
    for limiter in limiters:
        for _ in range(2):  # each has its two calls at once, whatever the others spent
            async with asyncio.timeout(2):
                async with limiter.use():
                    pass
    # The first key's submissions are spent, for every process.
    third = limiter_for(processes[2], 2, 30.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            async with third.use():
                pass


async def test_a_rate_limit_answer_holds_every_process_back(processes: list[Storage]) -> None:
    first = limiter_for(processes[0], 10, 1.0)
    second = limiter_for(processes[1], 10, 1.0)
    await first.push_back(1.5)
    asked = time.monotonic()
    async with second.use():
        waited = time.monotonic() - asked
    assert 1.3 <= waited < 4.0


async def test_the_key_is_never_stored(processes: list[Storage]) -> None:
    async with limiter_for(processes[0], 3, 1.0).use():
        pass
    rows = await processes[0].backend.rows("SELECT account, kind FROM kie_rate_slots")  # type: ignore[attr-defined]
    assert [(r["account"], r["kind"]) for r in rows] == [(account_fingerprint(KEY), "submit")]
    assert KEY not in rows[0]["account"]


# A process that takes every slot of the window, starts its calls and never ends them: it is
# killed with SIGKILL while they are on the wire.
_HOLDER = """
import asyncio, sys
from bot.ratebudget import SharedWindow, account_fingerprint
from bot.store import PostgresTarget, open_storage

async def main() -> None:
    storage = await open_storage(PostgresTarget(sys.argv[1]))
    window = SharedWindow(
        storage.rate_windows, account_fingerprint(sys.argv[2]), "submit", 3, 0.3, hold=3.0
    )
    for _ in range(3):
        await window.take()
    print("holding", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_process_killed_mid_call_holds_its_slots_only_until_they_expire(
    processes: list[Storage], postgres_target: PostgresTarget
) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLDER,
        postgres_target.url,
        KEY,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None
        async with asyncio.timeout(30):
            assert (await holder.stdout.readline()).strip() == b"holding"
        holder.kill()  # SIGKILL: its slots are never finished nor given back
        await holder.wait()
        killed_at = time.monotonic()
        assert processes[0].rate_windows is not None
        window = SharedWindow(
            processes[0].rate_windows, account_fingerprint(KEY), "submit", 3, 0.3, hold=3.0
        )
        async with asyncio.timeout(10):
            slot = await window.take()
        waited = time.monotonic() - killed_at
        assert slot.waited
        # Not granted while the dead process's calls could still be on the wire, and granted
        # once their hold ran out (3 s after they were taken, shortly before the kill).
        assert 1.0 <= waited < 6.0
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_free_now_counts_what_other_processes_spent(processes: list[Storage]) -> None:
    """The poll scheduler holds routine polls back by `free_now`: with a shared budget it must
    see the other processes' queries, not assume the whole limit is its own."""
    other = limiter_for(processes[0], 5, 5.0, kind="query")
    for _ in range(3):
        async with other.use():
            pass
    mine = limiter_for(processes[1], 5, 5.0, kind="query")
    assert mine.free_now() == 5, "nothing seen yet"
    async with mine.use():
        pass
    assert mine.free_now() == 1  # 5 - the other's 3 - its own 1, as of its last look
    assert other.free_now() == 2  # it has not looked since: its own 3 only
    async with mine.use() as slot:
        assert mine.free_now() == 0
        slot.unused = True  # the poll scheduler changed its mind: the slot is free again
    assert mine.free_now() == 1
    rows = await processes[0].backend.rows(  # type: ignore[attr-defined]
        "SELECT sum(slots) FROM kie_rate_slots WHERE kind = 'query'"
    )
    assert rows[0][0] == 4, "given back in the database too"


async def test_a_process_refused_first_is_served_first(processes: list[Storage]) -> None:
    """Two processes refused while the window is full: the one refused first gets the next
    slot, even when the other asks again sooner (no process starves behind quicker ones)."""
    assert processes[0].rate_windows is not None and processes[1].rate_windows is not None
    account = account_fingerprint(KEY)

    async def late(seconds: float) -> None:  # this process's event loop is slow to wake
        await asyncio.sleep(seconds + 0.3)

    first = SharedWindow(processes[0].rate_windows, account, "submit", 1, 0.3, hold=5.0, sleep=late)
    second = SharedWindow(processes[1].rate_windows, account, "submit", 1, 0.3, hold=5.0)
    await second.finish((await second.take()).id)  # the window's one slot, used
    served: list[str] = []

    async def take(name: str, window: SharedWindow) -> None:
        slot = await window.take()
        served.append(name)
        await window.finish(slot.id)

    early = asyncio.create_task(take("first", first))
    await asyncio.sleep(0.1)  # refused first
    await take("second", second)  # wakes sooner, but must let the first go
    await early
    assert served == ["first", "second"]
