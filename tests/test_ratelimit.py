"""The sliding-window limiter that keeps the bot inside kie.ai's documented limits."""

from __future__ import annotations

import asyncio

from bot.kie.ratelimit import SlidingWindowLimiter
from tests.clock import FakeClock


async def take(limiter: SlidingWindowLimiter, key: str | None = None) -> None:
    """One call's worth of the limit, made instantly."""
    async with limiter.use(key):
        pass


async def test_never_more_than_the_limit_in_any_window() -> None:
    time = FakeClock(0.0)
    limiter = SlidingWindowLimiter(20, 10.0, clock=time, sleep=time.sleep)
    granted: list[float] = []

    async def caller() -> None:
        await take(limiter)
        granted.append(time.now)

    await asyncio.gather(*(caller() for _ in range(65)))
    assert len(granted) == 65
    for i in range(len(granted) - 20):
        assert granted[i + 20] - granted[i] >= 10.0
    # No idle gaps: each batch of 20 starts as soon as the window allows.
    assert granted[20] == 10.0 and granted[40] == 20.0 and granted[60] == 30.0


async def test_waiters_are_served_in_arrival_order() -> None:
    time = FakeClock(0.0)
    limiter = SlidingWindowLimiter(1, 1.0, clock=time, sleep=time.sleep)
    order: list[int] = []

    async def caller(n: int) -> None:
        await take(limiter)
        order.append(n)

    await asyncio.gather(*(caller(n) for n in range(10)))
    assert order == list(range(10))


async def test_delay_holds_every_caller_back() -> None:
    time = FakeClock(0.0)
    limiter = SlidingWindowLimiter(10, 1.0, clock=time, sleep=time.sleep)
    limiter.delay(5.0)
    await take(limiter)
    assert time.now >= 5.0


async def test_margin_widens_the_window() -> None:
    time = FakeClock(0.0)
    limiter = SlidingWindowLimiter(2, 1.0, margin=0.25, clock=time, sleep=time.sleep)
    for _ in range(3):
        await take(limiter)
    assert time.now == 1.25


async def test_keys_are_served_round_robin() -> None:
    time = FakeClock(0.0)
    limiter = SlidingWindowLimiter(1, 1.0, clock=time, sleep=time.sleep)
    order: list[str] = []

    async def caller(key: str, n: int) -> None:
        await take(limiter, key)
        order.append(f"{key}{n}")

    greedy = [asyncio.create_task(caller("a", n)) for n in range(4)]
    await asyncio.sleep(0)
    polite = [asyncio.create_task(caller("b", n)) for n in range(2)]
    await asyncio.gather(*greedy, *polite)
    assert order == ["a0", "b0", "a1", "b1", "a2", "a3"]


async def test_turn_tells_a_new_caller_its_place_and_wait() -> None:
    time = FakeClock(0.0)
    limiter = SlidingWindowLimiter(2, 10.0, clock=time, sleep=time.sleep)
    assert limiter.turn("x").wait_seconds == 0
    await take(limiter, "a")
    await take(limiter, "a")
    waiting = [asyncio.create_task(take(limiter, "a")) for _ in range(3)]
    await asyncio.sleep(0)
    turn = limiter.turn("b")
    assert turn.position == 2  # behind a's first waiter, ahead of a's others
    assert turn.wait_seconds == 10.0
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    time = FakeClock(0.0)
    limiter = SlidingWindowLimiter(1, 1.0, clock=time, sleep=time.sleep)
    await take(limiter)
    doomed = asyncio.create_task(take(limiter))
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.gather(doomed, return_exceptions=True)
    await take(limiter)
    assert time.now == 1.0
