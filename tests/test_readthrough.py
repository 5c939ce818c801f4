"""The read-through cache: one read for everyone asking at once, nothing stale kept."""

from __future__ import annotations

import asyncio

import pytest

from bot.readthrough import ReadThrough
from tests.clock import FakeClock


class Source:
    """Counts reads; each waits for `release` so the test decides when it returns."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.release = asyncio.Event()
        self.value = "v1"
        self.error: Exception | None = None
        self.started = asyncio.Event()

    async def load(self, key: str) -> str:
        self.reads.append(key)
        self.started.set()
        value = self.value
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return f"{key}={value}"

    async def reading(self) -> None:
        """Until a read has started."""
        await asyncio.wait_for(self.started.wait(), 5)


async def test_callers_asking_at_once_share_one_read() -> None:
    source = Source()
    cache = ReadThrough(source.load)
    waiting = [asyncio.ensure_future(cache.get("a")) for _ in range(50)]
    await asyncio.sleep(0)
    source.release.set()
    assert set(await asyncio.gather(*waiting)) == {"a=v1"}
    assert await cache.get("a") == "a=v1"
    assert source.reads == ["a"]


async def test_a_change_during_a_read_keeps_the_read_from_being_kept() -> None:
    source = Source()
    cache = ReadThrough(source.load)
    early = asyncio.ensure_future(cache.get("a"))
    await source.reading()
    source.value = "v2"  # the change is written...
    cache.drop("a")  # ...and the cache told, while the first read is still under way
    source.release.set()
    assert await early == "a=v1", "its caller gets what it read, as without a cache"
    assert await cache.get("a") == "a=v2"
    assert source.reads == ["a", "a"]


async def test_dropping_one_key_leaves_another_keys_read_usable() -> None:
    source = Source()
    cache = ReadThrough(source.load)
    other = asyncio.ensure_future(cache.get("b"))
    await source.reading()
    cache.drop("a")
    source.release.set()
    assert await other == "b=v1"
    source.value = "v2"
    cache.drop("b")
    assert await cache.get("b") == "b=v2", "not the finished read of before"


async def test_an_error_reaches_every_caller_and_is_not_kept() -> None:
    source = Source()
    source.error = OSError("disk")
    cache = ReadThrough(source.load)
    waiting = [asyncio.ensure_future(cache.get("a")) for _ in range(3)]
    await asyncio.sleep(0)
    source.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    source.error = None
    assert await cache.get("a") == "a=v1"
    assert len(source.reads) == 2


async def test_a_cancelled_caller_does_not_cancel_the_read_of_the_others() -> None:
    source = Source()
    cache = ReadThrough(source.load)
    first = asyncio.ensure_future(cache.get("a"))
    second = asyncio.ensure_future(cache.get("a"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    source.release.set()
    assert await second == "a=v1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert source.reads == ["a"]


async def test_values_older_than_max_age_are_read_again() -> None:
    source = Source()
    source.release.set()
    clock = FakeClock()
    cache = ReadThrough(source.load, max_age=2.0, clock=clock)
    assert await cache.get("a") == "a=v1"
    clock.advance(1.9)
    source.value = "v2"
    assert await cache.get("a") == "a=v1"
    clock.advance(0.2)
    assert await cache.get("a") == "a=v2"


async def test_it_keeps_at_most_max_keys() -> None:
    source = Source()
    source.release.set()
    cache = ReadThrough(source.load, max_keys=3)
    for key in "abcd":
        await cache.get(key)
    await cache.get("a")
    assert source.reads == ["a", "b", "c", "d", "a"], "past three keys, everything is read again"
