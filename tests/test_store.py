"""The SQLite job ledger: atomic reservations, single refunds, schema versioning, WAL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import pytest

from bot.store import SCHEMA_VERSION, JobState, NewJob, Store


def _job(user_id: int = 1, units: int = 1, day: str = "2026-11-27") -> NewJob:
    return NewJob(user_id, 10, 20, day, units, "a prompt", "1:1", "1K")


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    store = await Store.open(tmp_path / "nested" / "dir" / "imagine.db")
    yield store
    await store.close()


async def test_first_start_creates_the_schema_with_a_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "new" / "imagine.db"
    store = await Store.open(path)
    await store.close()
    async with aiosqlite.connect(path) as db:
        assert (await (await db.execute("PRAGMA user_version")).fetchone())[0] == SCHEMA_VERSION
        assert (await (await db.execute("PRAGMA journal_mode")).fetchone())[0] == "wal"


async def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    store = await Store.open(path)
    await store.reserve(_job(), limit=5)
    await store.close()
    store = await Store.open(path)
    assert await store.units_used(1, "2026-11-27") == 1
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()


async def test_a_database_from_a_newer_bot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    async with aiosqlite.connect(path) as db:
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        await Store.open(path)


async def test_reservation_stops_at_the_limit(store: Store) -> None:
    assert await store.reserve(_job(units=2), limit=3) is not None
    assert await store.reserve(_job(units=2), limit=3) is None
    assert await store.reserve(_job(units=1), limit=3) is not None
    assert await store.units_used(1, "2026-11-27") == 3


async def test_quota_is_per_user_and_per_day(store: Store) -> None:
    assert await store.reserve(_job(user_id=1), limit=1) is not None
    assert await store.reserve(_job(user_id=2), limit=1) is not None
    assert await store.reserve(_job(user_id=1, day="2026-11-28"), limit=1) is not None
    assert await store.reserve(_job(user_id=1), limit=1) is None


async def test_twenty_simultaneous_reservations_never_overspend(store: Store) -> None:
    results = await asyncio.gather(*(store.reserve(_job(units=1), limit=7) for _ in range(20)))
    assert sum(r is not None for r in results) == 7
    assert await store.units_used(1, "2026-11-27") == 7


async def test_a_refund_gives_units_back_exactly_once(store: Store) -> None:
    job = await store.reserve(_job(units=2), limit=2)
    assert job is not None
    assert await store.refund(job.id, "failed") is True
    assert await store.refund(job.id, "failed again") is False
    assert await store.units_used(1, "2026-11-27") == 0
    refunded = await store.get_job(job.id)
    assert refunded is not None and refunded.state is JobState.REFUNDED


async def test_a_delivered_job_cannot_be_refunded(store: Store) -> None:
    job = await store.reserve(_job(), limit=2)
    assert job is not None
    assert await store.mark_submitted(job.id, "task-1")
    assert await store.mark_delivered(job.id)
    assert not await store.refund(job.id, "late failure")
    assert await store.units_used(1, "2026-11-27") == 1
    assert await store.open_jobs() == []
