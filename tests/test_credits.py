"""When the bot reads the kie.ai balance and when it warns: the real client, the fake kie.ai."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.__main__ import build_kie_client
from bot.kie.credits import CreditWatch
from bot.settings import Settings
from tests.clock import FakeClock
from tests.fakes.kie_server import FakeKie


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _watch(
    session: aiohttp.ClientSession, kie: FakeKie, clock: FakeClock, threshold: float = 100
) -> CreditWatch:
    settings = Settings(discord_token="t", kie_api_key=kie.api_key, kie_api_base=kie.base_url)
    return CreditWatch(
        build_kie_client(session, settings),
        threshold=threshold,
        check_every=600,
        warn_every=86400,
        clock=clock,
    )


def _credit_queries(kie: FakeKie) -> int:
    return len(kie.calls_to("/api/v1/chat/credit"))


async def test_the_balance_is_read_at_most_every_ten_minutes_after_jobs(
    session: aiohttp.ClientSession, fake_kie: FakeKie
) -> None:
    clock = FakeClock()
    watch = _watch(session, fake_kie, clock)
    fake_kie.credits = 5000
    assert await watch.after_job() is None
    clock.advance(599)
    assert await watch.after_job() is None
    assert _credit_queries(fake_kie) == 1, "not again within ten minutes"
    clock.advance(1)
    await watch.after_job()
    assert _credit_queries(fake_kie) == 2


async def test_a_low_balance_warns_once_a_day_or_when_it_halves(
    session: aiohttp.ClientSession, fake_kie: FakeKie
) -> None:
    clock = FakeClock()
    watch = _watch(session, fake_kie, clock)
    fake_kie.credits = 80
    warning = await watch.after_job()
    assert warning is not None and warning.credits == 80 and warning.low
    clock.advance(600)
    fake_kie.credits = 70
    assert await watch.after_job() is None, "warned already today"
    clock.advance(600)
    fake_kie.credits = 40
    halved = await watch.after_job()
    assert halved is not None and halved.credits == 40, "halved since the last warning"
    clock.advance(86400)
    fake_kie.credits = 39
    assert await watch.after_job() is not None, "a day later"


async def test_running_out_of_credits_looks_at_once(
    session: aiohttp.ClientSession, fake_kie: FakeKie
) -> None:
    clock = FakeClock()
    watch = _watch(session, fake_kie, clock)
    fake_kie.credits = 5000
    await watch.after_job()
    fake_kie.credits = 3
    warning = await watch.after_job(out_of_credits=True)
    assert warning is not None and warning.credits == 3
    assert _credit_queries(fake_kie) == 2


async def test_a_threshold_of_zero_never_reads_or_warns(
    session: aiohttp.ClientSession, fake_kie: FakeKie
) -> None:
    watch = _watch(session, fake_kie, FakeClock(), threshold=0)
    fake_kie.credits = 0
    assert await watch.after_job(out_of_credits=True) is None
    assert _credit_queries(fake_kie) == 0
    balance = await watch.balance()  # /server credits still shows it
    assert balance.credits == 0 and not balance.low


async def test_an_unreadable_balance_is_not_a_warning(
    session: aiohttp.ClientSession, fake_kie: FakeKie
) -> None:
    watch = _watch(session, fake_kie, FakeClock())
    fake_kie.api_key = "another-key"  # the bot's key is refused
    assert await watch.after_job() is None
