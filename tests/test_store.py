"""The job ledger: atomic reservations, single refunds, schema versioning; each on both
backends (`storage_target`), WAL and SQLite's own migrations on SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import aiosqlite
import pytest

from bot.domain import (
    DayTotals,
    ImageRequest,
    Job,
    JobState,
    MemberDefaults,
    MemberTotals,
    NewJob,
    OverLimit,
    ReplyTarget,
    ServerPolicy,
    SpendLimits,
    TrayImage,
    Usage,
)
from bot.store import BanList, DatabaseTarget, DatabaseTooNew, Storage, open_storage
from bot.store.migrations import MIGRATIONS, SCHEMA_VERSION

DAY = "2026-11-27"


def _job(user_id: int = 1, units: int = 1, day: str = "2026-11-27") -> NewJob:
    return NewJob(user_id, 10, 20, day, units, ImageRequest("a prompt", "1:1", "1K"))


async def _used(store: Storage, day: str, user_id: int = 1, guild_id: int | None = 10) -> int:
    return (await store.jobs.usage(user_id, guild_id, day)).used


@pytest.fixture
async def store(storage_target: DatabaseTarget) -> Storage:
    store = await open_storage(storage_target)
    yield store
    await store.close()


async def test_first_start_creates_the_schema_with_a_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "new" / "imagine.db"
    store = await open_storage(path)
    await store.close()
    async with aiosqlite.connect(path) as db:
        assert (await (await db.execute("PRAGMA user_version")).fetchone())[0] == SCHEMA_VERSION
        assert (await (await db.execute("PRAGMA journal_mode")).fetchone())[0] == "wal"


async def test_reopening_keeps_data_and_does_not_migrate_twice(
    storage_target: DatabaseTarget,
) -> None:
    store = await open_storage(storage_target)
    await store.jobs.reserve(_job(), SpendLimits(5))
    await store.close()
    store = await open_storage(storage_target)
    assert await _used(store, "2026-11-27") == 1
    assert await store.backend.schema_version() == SCHEMA_VERSION
    await store.close()


async def test_a_database_from_a_newer_bot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    async with aiosqlite.connect(path) as db:
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseTooNew, match="newer") as refused:
        await open_storage(path)
    assert (refused.value.found, refused.value.known) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert str(path) in str(refused.value)


async def test_reservation_stops_at_the_limit(store: Storage) -> None:
    assert isinstance(await store.jobs.reserve(_job(units=2), SpendLimits(3)), Job)
    assert await store.jobs.reserve(_job(units=2), SpendLimits(3)) is OverLimit.QUOTA
    assert isinstance(await store.jobs.reserve(_job(units=1), SpendLimits(3)), Job)
    assert await _used(store, "2026-11-27") == 3


async def test_quota_is_per_user_and_per_day(store: Storage) -> None:
    assert isinstance(await store.jobs.reserve(_job(user_id=1), SpendLimits(1)), Job)
    assert isinstance(await store.jobs.reserve(_job(user_id=2), SpendLimits(1)), Job)
    assert isinstance(
        await store.jobs.reserve(_job(user_id=1, day="2026-11-28"), SpendLimits(1)), Job
    )
    assert await store.jobs.reserve(_job(user_id=1), SpendLimits(1)) is OverLimit.QUOTA


async def test_twenty_simultaneous_reservations_never_overspend(store: Storage) -> None:
    results = await asyncio.gather(
        *(store.jobs.reserve(_job(units=1), SpendLimits(7)) for _ in range(20))
    )
    assert sum(isinstance(r, Job) for r in results) == 7
    assert await _used(store, "2026-11-27") == 7


async def test_a_refund_gives_units_back_exactly_once(store: Storage) -> None:
    job = await store.jobs.reserve(_job(units=2), SpendLimits(2))
    assert isinstance(job, Job)
    assert await store.jobs.refund(job.id, "failed") is True
    assert await store.jobs.refund(job.id, "failed again") is False
    assert await _used(store, "2026-11-27") == 0
    refunded = await store.jobs.get_job(job.id)
    assert refunded is not None and refunded.state is JobState.REFUNDED


async def test_a_delivered_job_cannot_be_refunded(store: Storage) -> None:
    job = await store.jobs.reserve(_job(), SpendLimits(2))
    assert isinstance(job, Job)
    assert await store.jobs.begin_submit(job.id)
    assert await store.jobs.mark_submitted(job.id, "task-1")
    assert not await store.jobs.mark_delivered(job.id, "reply"), (
        "only a delivering job is delivered"
    )
    assert await store.jobs.begin_delivery(job.id)
    assert await store.jobs.mark_delivered(job.id, "reply")
    assert not await store.jobs.refund(job.id, "late failure")
    assert await _used(store, "2026-11-27") == 1
    assert await store.jobs.open_jobs() == []


async def test_a_submitted_job_cannot_be_submitted_again(store: Storage) -> None:
    job = await store.jobs.reserve(_job(), SpendLimits(2))
    assert isinstance(job, Job)
    assert await store.jobs.begin_submit(job.id)
    assert not await store.jobs.begin_submit(job.id)
    assert await store.jobs.mark_submitted(job.id, "task-1")
    assert not await store.jobs.mark_submitted(job.id, "task-2")
    found = await store.jobs.get_job(job.id)
    assert found is not None and found.task_id == "task-1"


async def test_a_finished_job_forgets_its_interaction_token(store: Storage) -> None:
    reply = ReplyTarget(application_id=7, token="secret-token", created_at=1.0, attachment_limit=9)
    job = await store.jobs.reserve(replace(_job(), reply=reply), SpendLimits(2))
    assert isinstance(job, Job) and job.reply == reply
    assert "secret-token" not in repr(job)
    await store.jobs.refund(job.id, "failed")
    found = await store.jobs.get_job(job.id)
    assert found is not None and found.reply is None


async def test_a_database_from_schema_version_1_is_migrated_without_losing_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    async with aiosqlite.connect(path) as db:
        for statement in MIGRATIONS[0]:
            await db.execute(statement)
        await db.execute(
            "INSERT INTO jobs (user_id, guild_id, channel_id, day, units, prompt, aspect_ratio,"
            " resolution, state, task_id, created_at, updated_at)"
            " VALUES (1, 2, 3, '2026-11-27', 2, 'old prompt', '1:1', '2K', 'submitted', 't-1',"
            " 100.0, 100.0)"
        )
        await db.execute("PRAGMA user_version = 1")
        await db.commit()
    store = await open_storage(path)
    try:
        assert await store.backend.schema_version() == SCHEMA_VERSION
        (job,) = await store.jobs.open_jobs()
        assert (job.image.prompt, job.task_id, job.state, job.reply) == (
            "old prompt",
            "t-1",
            JobState.SUBMITTED,
            None,
        )
        assert await _used(store, "2026-11-27", guild_id=2) == 2
    finally:
        await store.close()


async def test_two_connections_writing_at_once_wait_instead_of_failing(
    storage_target: DatabaseTarget,
) -> None:
    # Two storages on one database, as two processes would have: neither overspends.
    first, second = await open_storage(storage_target), await open_storage(storage_target)
    try:
        results = await asyncio.gather(
            *(
                s.jobs.reserve(_job(units=1), SpendLimits(30))
                for s in (first, second)
                for _ in range(20)
            )
        )
        assert sum(isinstance(r, Job) for r in results) == 30
        assert await _used(first, "2026-11-27") == 30
    finally:
        await first.close()
        await second.close()


# --- per-server policy ------------------------------------------------------------------------


def _in(guild_id: int | None, user_id: int = 1, units: int = 1) -> NewJob:
    return NewJob(user_id, guild_id, 20, "2026-11-27", units, ImageRequest("a prompt", "1:1", "1K"))


async def test_quota_is_counted_per_server(store: Storage) -> None:
    assert isinstance(await store.jobs.reserve(_in(10), SpendLimits(1)), Job)
    assert await store.jobs.reserve(_in(10), SpendLimits(1)) is OverLimit.QUOTA
    assert isinstance(await store.jobs.reserve(_in(11), SpendLimits(1)), Job), "another server"
    assert isinstance(await store.jobs.reserve(_in(None), SpendLimits(1)), Job), "direct messages"


async def test_the_server_budget_stops_everyone_once_spent(store: Storage) -> None:
    budget = SpendLimits(5, server_budget=3)
    assert isinstance(await store.jobs.reserve(_in(10, user_id=1, units=2), budget), Job)
    assert await store.jobs.reserve(_in(10, user_id=2, units=2), budget) is OverLimit.BUDGET
    assert isinstance(await store.jobs.reserve(_in(10, user_id=2, units=1), budget), Job)
    assert await store.jobs.reserve(_in(10, user_id=3), budget) is OverLimit.BUDGET
    assert isinstance(await store.jobs.reserve(_in(11, user_id=3), budget), Job)
    assert await store.jobs.server_units(10, "2026-11-27") == 3


async def test_simultaneous_members_never_overspend_the_server_budget(store: Storage) -> None:
    results = await asyncio.gather(
        *(
            store.jobs.reserve(_in(10, user_id=u), SpendLimits(5, server_budget=7))
            for u in range(20)
        )
    )
    assert sum(isinstance(r, Job) for r in results) == 7
    assert await store.jobs.server_units(10, "2026-11-27") == 7


async def test_a_grant_adds_to_todays_limit_and_a_reset_clears_usage(store: Storage) -> None:
    day = "2026-11-27"
    assert isinstance(await store.jobs.reserve(_in(10), SpendLimits(1)), Job)
    assert await store.jobs.reserve(_in(10), SpendLimits(1)) is OverLimit.QUOTA
    await store.jobs.add_quota_adjustment(10, 1, day, "grant", 2, actor=99)
    assert await store.jobs.usage(1, 10, day) == Usage(used=1, granted=2)
    assert isinstance(await store.jobs.reserve(_in(10, units=2), SpendLimits(1)), Job)
    assert await store.jobs.reserve(_in(10), SpendLimits(1)) is OverLimit.QUOTA
    await store.jobs.add_quota_adjustment(10, 1, day, "reset", 0, actor=99)
    assert await store.jobs.usage(1, 10, day) == Usage(used=0, granted=2)
    assert await store.jobs.usage(1, 11, day) == Usage(used=0, granted=0), "another server"


async def test_policy_of_one_server_never_touches_another(store: Storage) -> None:
    await store.settings.set_policy_value(10, "daily_quota", 3)
    await store.settings.set_policy_value(10, "daily_budget", 50)
    await store.settings.set_role_quota(10, 555, 8)
    assert await store.settings.server_policy(10) == ServerPolicy(
        daily_quota=3, role_quotas={555: 8}, daily_budget=50
    )
    assert await store.settings.server_policy(11) == ServerPolicy()
    assert await store.settings.set_role_quota(10, 555, None)
    assert not await store.settings.set_role_quota(10, 555, None)
    await store.settings.set_policy_value(10, "daily_quota", None)
    assert await store.settings.server_policy(10) == ServerPolicy(daily_budget=50)
    with pytest.raises(ValueError):
        await store.settings.set_policy_value(10, "prompt; DROP TABLE jobs", 1)


async def test_daily_totals_and_top_members(store: Storage) -> None:
    delivered = await store.jobs.reserve(_in(10, user_id=1, units=2), SpendLimits(9))
    failed = await store.jobs.reserve(_in(10, user_id=2), SpendLimits(9))
    await store.jobs.reserve(
        _in(10, user_id=2), SpendLimits(9)
    )  # still open: charged, not finished
    await store.jobs.reserve(_in(11, user_id=3), SpendLimits(9))  # another server
    assert isinstance(delivered, Job) and isinstance(failed, Job)
    await store.jobs.begin_submit(delivered.id)
    await store.jobs.mark_submitted(delivered.id, "t")
    await store.jobs.begin_delivery(delivered.id)
    await store.jobs.mark_delivered(delivered.id, "reply")
    await store.jobs.refund(failed.id, "generation_failed")
    assert await store.jobs.daily_totals(10, "2026-11-21") == [
        DayTotals("2026-11-27", delivered=1, failed=1, units=3)
    ]
    assert await store.jobs.top_members(10, "2026-11-21", 5) == [
        MemberTotals(1, delivered=1, units=2),
        MemberTotals(2, delivered=0, units=1),
    ]


async def test_a_cancel_racing_the_submission_lets_exactly_one_win(store: Storage) -> None:
    """Cancel (reserved → refunded) and begin_submit (reserved → submitting) are conditional
    on the same state: whatever the interleaving, one succeeds, and a job is either refunded
    and never sent, or sent and charged."""
    day = "2026-11-27"
    for _ in range(20):
        job = await store.jobs.reserve(_job(day=day), SpendLimits(1000))
        assert not isinstance(job, OverLimit)
        cancelled, submitted, again = await asyncio.gather(
            store.jobs.cancel(job.id, "cancelled"),
            store.jobs.begin_submit(job.id),
            store.jobs.cancel(job.id, "cancelled"),
        )
        assert [cancelled or again, submitted].count(True) == 1
        assert not (cancelled and again), "two presses never refund twice"
        after = await store.jobs.get_job(job.id)
        assert after is not None
        expected = JobState.SUBMITTING if submitted else JobState.REFUNDED
        assert after.state is expected


# --- every other repository, on both backends --------------------------------------------------


async def test_moderation_and_operator_records_keep_what_they_are_given(store: Storage) -> None:
    moderation, operator = store.moderation, store.operator
    assert await moderation.add_blocked_term(10, "cat", "Cat", actor=1)
    assert not await moderation.add_blocked_term(10, "cat", "CAT", actor=1), "already blocked"
    assert await moderation.blocked_terms(10) == ["Cat"]
    for canonical in ("zebra", "apple", "mango"):
        assert await moderation.add_global_term(canonical, canonical.title())
    assert not await moderation.add_global_term("apple", "Apple")
    assert await moderation.global_terms() == ["Zebra", "Apple", "Mango"], "in the order added"
    assert await moderation.ban(10, 5, actor=1, reason=None)
    assert not await moderation.ban(10, 5, actor=1, reason="again")
    assert await moderation.servers_banning(5) == [10]
    for _ in range(3):
        await moderation.count_refusal(DAY, 10, "blocked")
    await moderation.count_refusal(DAY, 0, "quota")
    assert await moderation.refusals_on(DAY) == {10: {"blocked": 3}, 0: {"quota": 1}}
    await operator.set_server_cap(10, 40)
    await operator.set_server_cap(10, 50)
    assert await operator.server_caps() == {10: 50}
    assert await operator.ban_everywhere(BanList.USERS, 2**62, "spam")
    assert not await operator.ban_everywhere(BanList.USERS, 2**62, "spam")
    assert await operator.banned_everywhere(BanList.USERS) == {2**62}, "64-bit ids"


async def test_settings_trays_defaults_and_values_keep_what_they_are_given(
    store: Storage,
) -> None:
    settings = store.settings
    await settings.set_policy_value(10, "daily_quota", 7)
    await settings.set_nsfw(10, "nsfw_allowed", True)
    assert await settings.set_role_quota(10, 99, 3)
    policy = await settings.server_policy(10)
    assert (policy.daily_quota, policy.nsfw_allowed, policy.role_quotas) == (7, True, {99: 3})
    assert await settings.allow_channel(10, 20) and not await settings.allow_channel(10, 20)
    assert await settings.allowed_channels(10) == [20]
    await store.meta.set("paused", "yes")
    await store.meta.set("paused", "no")
    assert await store.meta.get("paused") == "no"
    for key in ("changes:operator", "changes:x_y", "changes;", "changes", "changez:a"):
        await store.meta.set(key, key.upper())
    assert await store.meta.with_prefix("changes:") == {
        "changes:operator": "CHANGES:OPERATOR",
        "changes:x_y": "CHANGES:X_Y",
    }, "a prefix, not a pattern"
    images = [
        TrayImage(str(n), f"https://cdn.example/{n}.png", f"{n}.png", 100.0) for n in (3, 1, 2)
    ]
    added = await store.trays.add(1, 10, images, since=50.0, room=8)
    assert [image.key for image in added.tray] == ["3", "1", "2"], "in the order added"
    await store.trays.remove(1, 10, ["1", "2"])
    assert [image.key for image in await store.trays.tray(1, 10, since=50.0)] == ["3"]
    await store.members.set_defaults(1, None, MemberDefaults(resolution="2K", count=2))
    assert await store.members.defaults(1, None) == MemberDefaults(resolution="2K", count=2)
    assert await store.members.clear_defaults(1, None)


async def test_a_claim_to_send_a_job_does_not_wait_for_a_whole_burst_of_charges(
    tmp_path: Path,
) -> None:
    # SQLite's one writing connection: PostgreSQL's writes never wait for each other's rows.
    store = await open_storage(tmp_path / "imagine.db")
    try:
        first = await store.jobs.reserve(_job(), SpendLimits(1))
        assert isinstance(first, Job)
        loop = asyncio.get_running_loop()
        charging = asyncio.Event()
        await store.backend.trace(
            lambda sql: loop.call_soon_threadsafe(charging.set) if "INSERT" in sql else None
        )
        # 200 members at once: one group of charges, one transaction, under way when the
        # claim to send the first job asks for the database.
        charges = [
            asyncio.ensure_future(store.jobs.reserve(_job(user_id=100 + n), SpendLimits(1)))
            for n in range(200)
        ]
        await charging.wait()
        assert await store.jobs.begin_submit(first.id)
        charged_by_then = sum(charge.done() for charge in charges)
        results = await asyncio.gather(*charges)
        await store.backend.trace(None)
        assert charged_by_then < len(charges), "the claim went between the charges"
        assert all(isinstance(result, Job) for result in results), "none lost or refused"
        assert len({result.id for result in results if isinstance(result, Job)}) == 200
        assert await _used(store, DAY, user_id=150) == 1
    finally:
        await store.close()


# --- lookups: the hot path's small reads ---------------------------------------------------------


async def test_a_lookup_reads_the_last_commit_and_inside_a_transaction_its_own_writes(
    store: Storage,
) -> None:
    db = store.backend
    await db.execute("INSERT INTO meta (key, value) VALUES ('lookup', 'one')")
    read = "SELECT value FROM meta WHERE key = 'lookup'"
    assert [row["value"] for row in await db.lookup(read)] == ["one"]
    async with db.transaction() as tx:
        await tx.execute("UPDATE meta SET value = 'two' WHERE key = 'lookup'")
        assert [row["value"] for row in await db.lookup(read)] == ["two"]
    assert [row["value"] for row in await db.lookup(read)] == ["two"]


async def test_sqlite_answers_a_lookup_on_the_loops_thread_and_other_reads_off_it(
    tmp_path: Path,
) -> None:
    store = await open_storage(tmp_path / "imagine.db")
    try:
        ran_on: dict[str, int] = {}
        await store.backend.trace(
            lambda sql: (
                ran_on.setdefault(sql.split("'")[1], threading.get_ident()) if "'" in sql else None
            )
        )
        await store.backend.lookup("SELECT 'looked up'")
        await store.backend.rows("SELECT 'read'")
        # A lookup the reader must answer (here: a statement SQLite refuses) still raises.
        with pytest.raises(sqlite3.OperationalError):
            await store.backend.lookup("SELECT * FROM no_such_table")
        await store.backend.trace(None)
    finally:
        await store.close()
    assert ran_on["looked up"] == threading.get_ident(), "no trip to aiosqlite's thread"
    assert ran_on["read"] != threading.get_ident()
