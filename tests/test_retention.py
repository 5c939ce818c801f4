"""HISTORY_DAYS: finished jobs older than the setting lose their prompts and links, and every
total the ledger reports stays the same."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.domain import DeliveryRoute, Job, JobState, NewJob, SpendLimits
from bot.kie import ImageRequest
from bot.retention import HistoryRetention
from bot.store import DatabaseTarget, Storage, open_storage

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()
OLD_DAY, RECENT_DAY = "2026-08-01", "2026-11-30"  # 124 and 3 days before NOW


async def _delivered(store: Storage, user: int, day: str, prompt: str) -> Job:
    request = ImageRequest(prompt, "1:1", reference_urls=("https://cdn.example/ref.png",))
    job = await store.jobs.reserve(NewJob(user, 1, None, day, 1, request), SpendLimits(member=99))
    assert isinstance(job, Job)
    assert await store.jobs.begin_submit(job.id)
    assert await store.jobs.mark_submitted(job.id, f"task-{job.id}")
    assert await store.jobs.begin_delivery(job.id, image_url="https://kie.example/i.png")
    assert await store.jobs.mark_delivered(job.id, DeliveryRoute.REPLY, "https://discord/m/1")
    return job


async def test_old_finished_jobs_are_blanked_and_every_total_is_unchanged(
    storage_target: DatabaseTarget,
) -> None:
    store = await open_storage(storage_target)
    try:
        old = [await _delivered(store, 7, OLD_DAY, f"an old secret {n}") for n in range(3)]
        recent = await _delivered(store, 7, RECENT_DAY, "a recent picture")
        waiting = await store.jobs.reserve(
            NewJob(7, 1, None, OLD_DAY, 1, ImageRequest("still waiting", "1:1")),
            SpendLimits(member=99),
        )
        assert isinstance(waiting, Job)
        before = (
            await store.jobs.usage(7, 1, OLD_DAY),
            await store.jobs.server_units(1, OLD_DAY),
            await store.jobs.daily_totals(1, "2026-01-01"),
        )

        retention = HistoryRetention(store.jobs, days=90, clock=lambda: NOW)
        assert await retention.expire() == 3
        assert await retention.expire() == 0, "a second pass finds nothing left"

        for job in old:
            blanked = await store.jobs.get_job(job.id)
            assert blanked is not None and blanked.state is JobState.DELIVERED
            assert blanked.image.prompt == "" and blanked.image.reference_urls == ()
            assert blanked.result_url is None and blanked.image_url is None
            assert blanked.task_id is None and blanked.forgotten_at is not None
        kept = await store.jobs.get_job(recent.id)
        assert kept is not None and kept.image.prompt == "a recent picture"
        still = await store.jobs.get_job(waiting.id)
        assert still is not None and still.image.prompt == "still waiting", "open jobs finish"
        after = (
            await store.jobs.usage(7, 1, OLD_DAY),
            await store.jobs.server_units(1, OLD_DAY),
            await store.jobs.daily_totals(1, "2026-01-01"),
        )
        assert after == before
    finally:
        await store.close()


async def test_history_days_zero_keeps_everything(storage_target: DatabaseTarget) -> None:
    store = await open_storage(storage_target)
    try:
        job = await _delivered(store, 7, "2020-01-01", "kept forever")
        assert await HistoryRetention(store.jobs, days=0, clock=lambda: NOW).expire() == 0
        kept = await store.jobs.get_job(job.id)
        assert kept is not None and kept.image.prompt == "kept forever"
    finally:
        await store.close()


async def test_a_large_history_is_blanked_in_batches(storage_target: DatabaseTarget) -> None:
    store = await open_storage(storage_target)
    try:
        for n in range(12):
            await _delivered(store, 100 + n, OLD_DAY, f"old {n}")
        assert await store.jobs.expire_history("2026-09-01", batch=5) == 12
    finally:
        await store.close()
