"""`OperatorAlerts` on a real database with a clock the test moves: how often each kind goes out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.alerts import ALERT_EVERY, RETRY_FAILED_AFTER, AlertKind, OperatorAlerts
from bot.store import DatabaseTarget, Storage, open_storage
from tests.clock import FakeClock

NOON = 1_800_000_000.0 - 1_800_000_000.0 % 86400 + 12 * 3600  # 12:00 UTC on some day


class Operator:
    """Where alerts go: records them, and can be made unreachable."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.reachable = True

    async def send(self, text: str) -> bool:
        if not self.reachable:
            return False
        self.received.append(text)
        return True


@pytest.fixture
async def store(storage_target: DatabaseTarget) -> AsyncIterator[Storage]:
    store = await open_storage(storage_target)
    yield store
    await store.close()


def alerts_at(store: Storage, operator: Operator, now: FakeClock) -> OperatorAlerts:
    return OperatorAlerts(store.meta, operator.send, clock=now)


async def test_each_kind_goes_out_at_most_once_an_hour(store: Storage) -> None:
    operator, now = Operator(), FakeClock(NOON)
    alerts = alerts_at(store, operator, now)
    assert await alerts.alert(AlertKind.KEY_REFUSED, "key")
    assert await alerts.alert(AlertKind.KEY_REFUSED, "key"), "alerted within the hour: true"
    assert await alerts.alert(AlertKind.FEATURE_DISABLED, "505"), "another kind goes out"
    now.advance(ALERT_EVERY - 1)
    assert await alerts.alert(AlertKind.KEY_REFUSED, "key")
    assert operator.received == ["key", "505"]
    now.advance(2)
    assert await alerts.alert(AlertKind.KEY_REFUSED, "key again")
    assert operator.received == ["key", "505", "key again"]


async def test_the_hour_survives_a_restart(store: Storage) -> None:
    operator, now = Operator(), FakeClock(NOON)
    assert await alerts_at(store, operator, now).alert(AlertKind.OUT_OF_CREDITS, "empty")
    now.advance(60)
    restarted = alerts_at(store, operator, now)
    assert await restarted.alert(AlertKind.OUT_OF_CREDITS, "empty")
    assert operator.received == ["empty"]


async def test_the_total_cap_alert_goes_out_once_a_utc_day(store: Storage) -> None:
    operator, now = Operator(), FakeClock(NOON)
    alerts = alerts_at(store, operator, now)
    assert await alerts.alert(AlertKind.TOTAL_CAP, "day one")
    now.advance(11 * 3600)  # 23:00, same day: still once
    assert await alerts.alert(AlertKind.TOTAL_CAP, "day one, later")
    now.advance(2 * 3600)  # 01:00 the next day
    assert await alerts.alert(AlertKind.TOTAL_CAP, "day two")
    assert operator.received == ["day one", "day two"]


async def test_a_low_balance_says_nothing_new_right_after_the_account_ran_out(
    store: Storage,
) -> None:
    operator, now = Operator(), FakeClock(NOON)
    alerts = alerts_at(store, operator, now)
    assert await alerts.alert(AlertKind.OUT_OF_CREDITS, "empty")
    assert await alerts.alert(AlertKind.LOW_BALANCE, "low")
    assert operator.received == ["empty"]
    now.advance(ALERT_EVERY)
    assert await alerts.alert(AlertKind.LOW_BALANCE, "low")
    assert operator.received == ["empty", "low"]


async def test_an_undelivered_alert_is_not_claimed_and_is_retried_a_minute_later(
    store: Storage,
) -> None:
    operator, now = Operator(), FakeClock(NOON)
    alerts = alerts_at(store, operator, now)
    operator.reachable = False
    assert not await alerts.alert(AlertKind.KEY_REFUSED, "key")
    operator.reachable = True
    assert not await alerts.alert(AlertKind.KEY_REFUSED, "key"), "not tried again at once"
    now.advance(RETRY_FAILED_AFTER)
    assert await alerts.alert(AlertKind.KEY_REFUSED, "key")
    assert operator.received == ["key"]


async def test_without_a_route_nothing_is_claimed(store: Storage) -> None:
    assert not await OperatorAlerts(store.meta).alert(AlertKind.KEY_REFUSED, "key")


async def test_several_processes_on_one_database_send_each_alert_once(
    storage_target: DatabaseTarget,
) -> None:
    # Three bot processes (each its own connection to the database) hit the same failure at
    # once: the operator hears about it once, and every process may say "alerted".
    stores = [await open_storage(storage_target) for _ in range(3)]
    try:
        operator, now = Operator(), FakeClock(NOON)
        processes = [alerts_at(store, operator, now) for store in stores]
        results = await asyncio.gather(
            *(alerts.alert(AlertKind.OUT_OF_CREDITS, "empty") for alerts in processes)
        )
        assert results == [True, True, True]
        assert operator.received == ["empty"]
        now.advance(60)
        assert await processes[2].alert(AlertKind.LOW_BALANCE, "low"), "covered by the first"
        assert operator.received == ["empty"]
        now.advance(ALERT_EVERY)
        assert await processes[1].alert(AlertKind.OUT_OF_CREDITS, "still empty")
        assert await processes[0].alert(AlertKind.OUT_OF_CREDITS, "still empty")
        assert operator.received == ["empty", "still empty"]
    finally:
        for store in stores:
            await store.close()
