"""A year of history: every query a command or a start-up runs is answered from an index.

The database is built by the benchmark's own builder (`bench.history_db`), with the real
migrations, and the real repository methods run against it while SQLite's trace hook records
each statement they send: the list of queries is the code's, not a copy that could drift, and a
test checks that every public repository method is either run here or named as not reached by
any command. Each recorded statement then goes through `EXPLAIN QUERY PLAN`, which must not
scan a big table (`SCAN jobs`, even through an index: a full index scan is still a million
entries) and, for the queries a member waits on, must use the index meant for it.

Why a smaller database whose statistics say a million jobs: building 1 M jobs takes about half a
minute of CPU on this 2-core machine (more while other suites run), too long for a unit test.
SQLite plans from `sqlite_stat1` alone (this SQLite has no STAT4, so bound values never change a
plan), so the test builds 50,000 jobs with the same members, servers and days as the benchmark's
million (the same skew: one member has ~3.7 % of all jobs) and then scales the statistics to
1 M rows: the row count and every "rows per key" figure above one grow by the same factor
(the number of members, servers and days stays that of the 1 M database). It checks the plans
under two sets of statistics: those the bot itself leaves (its start-up analysis, which reads
only the first entries of each index, so a heavy member looks like everyone) and those of a full
`ANALYZE`. The plans were also checked on a real 1 M-job database (`python -m bench.history_db`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bench.history_db import ADMIN_ID, GUILD_BASE, build_history
from bot.__main__ import keep_statistics
from bot.domain import (
    AdjustmentKind,
    DeliveryRoute,
    ImageRequest,
    Job,
    LogKind,
    MemberDefaults,
    NewJob,
    SpendLimits,
    TrayImage,
)
from bot.settings import Settings
from bot.store import BanList, Storage, open_storage
from bot.store.database import Database
from bot.store.departures import SqlDepartedServers
from bot.store.jobs import SqlJobLedger
from bot.store.leases import SqlJobLeases
from bot.store.member_defaults import SqlMemberSettings
from bot.store.meta import SqlKeyValues
from bot.store.moderation import SqlModerationRecords
from bot.store.operator import SqlOperatorRecords
from bot.store.run_slots import SqlRunSlots
from bot.store.server_settings import SqlServerSettings
from bot.store.tray import SqlReferenceTrays
from tests.conftest import StartBot
from tests.helpers import eventually

BUILT_JOBS = 50_000
PRETEND_JOBS = 1_000_000
# Tables that grow with use: none of them may be read whole.
BIG_TABLES = {"jobs", "moderation_log", "quota_adjustments", "refusal_counts", "reference_tray"}
# Public repository methods no command, button or start-up calls (tests and the benchmark do).
NOT_REACHED = {
    "count_by_state": "tests and bench only",
    "total_units_charged": "tests and bench only",
    "moderation_events": "tests only",
    "settle": "no SQL: waits for the group commits under way",
}
# Which index a query members wait on must use.
EXPECTED_INDEX = {
    "recent_jobs": "jobs_member_history",  # /history: the member's index, never the server's
    "usage": "jobs_member_day_spend",  # /quota: the member's day, from the index alone
    "over_limit": "jobs_member_day_spend",  # every charge's checks, the same way
    "forget_history": "jobs_member_history",  # /history forget: the member's own jobs
    "expire_history": "jobs_unforgotten_day",  # HISTORY_DAYS: the old, unforgotten days
    "purge_personal": "jobs_guild_day_spend",  # a server left: its own jobs only
    "open_jobs": "jobs_open",  # start-up: the few open jobs
    "submissions_since": "jobs_submitted_at",  # start-up: the last seconds' submissions
    "recent_run_seconds": "jobs_submitted_at",  # start-up: the last day's run times
    "batch_jobs": "jobs_batch",  # a batch's jobs, when it is delivered
}
REPOSITORIES = (
    SqlJobLedger,
    SqlModerationRecords,
    SqlServerSettings,
    SqlOperatorRecords,
    SqlKeyValues,
    SqlReferenceTrays,
    SqlMemberSettings,
    SqlDepartedServers,
    SqlJobLeases,
    SqlRunSlots,
)
DAY = "2026-06-01"
# SQLite's query plans and statistics, on its file.
pytestmark = pytest.mark.sqlite_only


@dataclass(frozen=True)
class History:
    path: Path
    heavy_user: int  # the member with the most jobs
    heavy_guild: int | None  # where they have most of them


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> History:
    path = tmp_path_factory.mktemp("history") / "history.db"
    build_history(path, BUILT_JOBS)
    with sqlite3.connect(path) as db:
        user, guild = db.execute(
            "SELECT user_id, guild_id FROM jobs GROUP BY user_id, guild_id"
            " ORDER BY COUNT(*) DESC LIMIT 1"
        ).fetchone()
    return History(path, user, guild)


def _scale_statistics(db: sqlite3.Connection, factor: float) -> None:
    """Make `sqlite_stat1` describe big tables `factor` times larger, of the same shape."""
    for table, index, stat in db.execute("SELECT tbl, idx, stat FROM sqlite_stat1").fetchall():
        if table not in BIG_TABLES:
            continue
        figures = [int(figure) for figure in stat.split()]
        scaled = [round(figures[0] * factor)] + [
            f if f <= 1 else round(f * factor) for f in figures[1:]
        ]
        db.execute(
            "UPDATE sqlite_stat1 SET stat = ? WHERE tbl = ? AND idx IS ?",
            (" ".join(map(str, scaled)), table, index),
        )
    db.commit()


def _plan(db: sqlite3.Connection, sql: str) -> list[str]:
    return [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")]


def _scans(plan: list[str]) -> list[str]:
    return [
        step
        for step in plan
        if (found := re.match(r"SCAN (\w+)", step)) and found.group(1) in BIG_TABLES
    ]


def _is_query(sql: str) -> bool:
    return sql.lstrip().split(None, 1)[0].upper() in {"SELECT", "INSERT", "UPDATE", "DELETE"}


Call = Callable[[Storage], Awaitable[object]]


def _calls(history: History) -> dict[str, Call]:
    """Every public repository method, called as the bot calls it, on the busiest member."""
    user, guild = history.heavy_user, history.heavy_guild
    server = guild if guild is not None else GUILD_BASE
    limits = SpendLimits(10, 50, server_budget=100, server_cap=500, total_cap=10_000)
    job = NewJob(user, guild, 1, DAY, 1, ImageRequest("a lighthouse", "1:1", "1K"))
    made: list[Job] = []

    async def reserve(store: Storage) -> object:
        found = await store.jobs.reserve(job, limits)
        assert isinstance(found, Job), found
        made.append(found)
        return found

    def on_job(step: Callable[[Storage, int], Awaitable[object]]) -> Call:
        return lambda store: step(store, made[0].id)

    return {
        # jobs: admission, charging, a job's life, /quota, /history, /server, /owner
        "over_limit": lambda s: s.jobs.over_limit(user, guild, DAY, 1, limits),
        "reserve": reserve,
        "usage": lambda s: s.jobs.usage(user, guild, DAY),
        "server_units": lambda s: s.jobs.server_units(guild, DAY),
        "total_units": lambda s: s.jobs.total_units(DAY),
        "add_quota_adjustment": lambda s: s.jobs.add_quota_adjustment(
            server, user, DAY, AdjustmentKind.GRANT, 2, ADMIN_ID
        ),
        "get_job": on_job(lambda s, i: s.jobs.get_job(i)),
        "open_jobs": lambda s: s.jobs.open_jobs(),
        "begin_submit": on_job(lambda s, i: s.jobs.begin_submit(i)),
        "submissions_since": lambda s: s.jobs.submissions_since(time.time() - 10),
        "recent_run_seconds": lambda s: s.jobs.recent_run_seconds(time.time() - 86400, 50),
        "mark_submitted": on_job(lambda s, i: s.jobs.mark_submitted(i, "task-1")),
        "adopt_task": on_job(lambda s, i: s.jobs.adopt_task(i, "task-1")),
        "return_to_line": on_job(lambda s, i: s.jobs.return_to_line(i)),
        "begin_delivery": on_job(lambda s, i: s.jobs.begin_delivery(i)),
        "mark_delivered": on_job(
            lambda s, i: s.jobs.mark_delivered(i, DeliveryRoute.REPLY, "https://x/1")
        ),
        "recent_jobs": lambda s: s.jobs.recent_jobs(user, guild, 10),
        "forget_history": lambda s: s.jobs.forget_history(user, guild, False),
        "expire_history": lambda s: s.jobs.expire_history("2026-03-01"),
        "refund": on_job(lambda s, i: s.jobs.refund(i, "test")),
        "cancel": on_job(lambda s, i: s.jobs.cancel(i, "cancelled")),
        "reserve_batch": lambda s: s.jobs.reserve_batch(replace(job, count=2), limits),
        "batch_jobs": on_job(lambda s, i: s.jobs.batch_jobs(i)),
        "mark_batch_delivered": on_job(
            lambda s, i: s.jobs.mark_batch_delivered([i, i + 1], DeliveryRoute.REPLY, "https://x/1")
        ),
        "set_input_urls": on_job(lambda s, i: s.jobs.set_input_urls(i, ("https://x/in.png",))),
        "set_job_credits": on_job(lambda s, i: s.jobs.set_job_credits(i, 14.0)),
        "mark_result_deleted": on_job(lambda s, i: s.jobs.mark_result_deleted(i)),
        "daily_totals": lambda s: s.jobs.daily_totals(server, "2026-05-25"),
        "top_members": lambda s: s.jobs.top_members(server, "2026-05-25", 5),
        "spend_by_server": lambda s: s.jobs.spend_by_server(DAY, "2026-06-01"),
        # moderation
        "add_blocked_term": lambda s: s.moderation.add_blocked_term(server, "gore", "gore", 1),
        "remove_blocked_term": lambda s: s.moderation.remove_blocked_term(server, "gore"),
        "blocked_terms": lambda s: s.moderation.blocked_terms(server),
        "add_global_term": lambda s: s.moderation.add_global_term("gore", "gore"),
        "remove_global_term": lambda s: s.moderation.remove_global_term("gore"),
        "global_terms": lambda s: s.moderation.global_terms(),
        "ban": lambda s: s.moderation.ban(server, user, ADMIN_ID, "spam"),
        "unban": lambda s: s.moderation.unban(server, user),
        "banned_members": lambda s: s.moderation.banned_members(server),
        "servers_banning": lambda s: s.moderation.servers_banning(user),
        "log_moderation": lambda s: s.moderation.log_moderation(
            server, user, LogKind.REFUSED_BLOCKED_TERM, "gore"
        ),
        "admin_changes": lambda s: s.moderation.admin_changes(server, 10),
        "count_refusal": lambda s: s.moderation.count_refusal(DAY, server, "quota"),
        "refusals_on": lambda s: s.moderation.refusals_on(DAY),
        # server settings
        "server_policy": lambda s: s.settings.server_policy(server),
        "set_nsfw": lambda s: s.settings.set_nsfw(server, "nsfw_allowed", True),
        "set_default_model": lambda s: s.settings.set_default_model(server, "pro"),
        "set_policy_value": lambda s: s.settings.set_policy_value(server, "daily_quota", 5),
        "set_role_quota": lambda s: s.settings.set_role_quota(server, 3, 7),
        "set_audit_channel": lambda s: s.settings.set_audit_channel(server, 4),
        "audit_channel": lambda s: s.settings.audit_channel(server),
        "allow_channel": lambda s: s.settings.allow_channel(server, 5),
        "disallow_channel": lambda s: s.settings.disallow_channel(server, 5),
        "allowed_channels": lambda s: s.settings.allowed_channels(server),
        # the operator
        "server_caps": lambda s: s.operator.server_caps(),
        "set_server_cap": lambda s: s.operator.set_server_cap(server, 100),
        "ban_everywhere": lambda s: s.operator.ban_everywhere(BanList.USERS, user, "spam"),
        "unban_everywhere": lambda s: s.operator.unban_everywhere(BanList.USERS, user),
        "banned_everywhere": lambda s: s.operator.banned_everywhere(BanList.SERVERS),
        "log_owner_action": lambda s: s.operator.log_owner_action(1, "cap", "x", "y"),
        "owner_actions": lambda s: s.operator.owner_actions(10),
        # reference trays: "Use as reference" adds (and purges), /imagine reads and empties
        "add": lambda s: s.trays.add(
            user, server, [TrayImage("1", "https://x/1.png", "1.png", time.time())], 0.0, 8
        ),
        "tray": lambda s: s.trays.tray(user, server, time.time() - 3600),
        "remove": lambda s: s.trays.remove(user, server, ["1"]),
        # members' own defaults (/settings, read by every /imagine)
        "defaults": lambda s: s.members.defaults(user, guild),
        "set_defaults": lambda s: s.members.set_defaults(
            user, guild, MemberDefaults(aspect_ratio="16:9", private=True)
        ),
        "clear_defaults": lambda s: s.members.clear_defaults(user, guild),
        # servers the bot left: at READY, on GUILD_DELETE / GUILD_CREATE, and every 6 hours
        "servers_with_data": lambda s: s.departures.servers_with_data(),
        "record_departure": lambda s: s.departures.record_departure(server, time.time()),
        "departures": lambda s: s.departures.departures(),
        "purge_personal": lambda s: s.departures.purge_personal(server),
        "purge_configuration": lambda s: s.departures.purge_configuration(server, time.time()),
        "clear_departure": lambda s: s.departures.clear_departure(server),
        # meta
        "get": lambda s: s.meta.get("paused"),
        "set": lambda s: s.meta.set("paused", "maintenance"),
        "delete": lambda s: s.meta.delete("paused"),
        "compare_and_set": lambda s: s.meta.compare_and_set("alert:x", None, "1.0"),
        "with_prefix": lambda s: s.meta.with_prefix("changes:"),  # every second, cluster mode
        # job leases (cluster mode): each job's start and end, every few seconds per process
        "claim": on_job(lambda s, i: s.leases.claim(i, "p1", time.time() + 30, 30)),
        "renew": lambda s: s.leases.renew("p1", time.time() + 30),
        "take_expired": lambda s: s.leases.take_expired("p2", time.time() + 30, 30, 100),
        "release": on_job(lambda s, i: s.leases.release(i, "p1")),
        "release_all": lambda s: s.leases.release_all("p1"),
        "holder": on_job(lambda s, i: s.leases.holder(i)),
        # running slots (cluster mode): each admission, start and end of a job
        "take_slot": on_job(lambda s, i: s.run_slots.take_slot(i, user, server, 2, 20, 3.0)),
        "occupy_slot": on_job(lambda s, i: s.run_slots.occupy_slot(i)),
        "release_slot": on_job(lambda s, i: s.run_slots.release_slot(i, "p1")),
        "running_slots": lambda s: s.run_slots.running_slots(server, user),
    }


def _public_methods() -> set[str]:
    return {
        name
        for repository in REPOSITORIES
        for name, member in inspect.getmembers(repository, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


def test_every_repository_method_is_checked_or_named_as_unreached(built: History) -> None:
    assert _public_methods() == set(_calls(built)) | set(NOT_REACHED)


@dataclass(frozen=True)
class Recorded:
    method: str
    sql: str


def _record(history: History, statistics: str) -> Iterator[tuple[Recorded, list[str]]]:
    """Run every call against a copy of the built database, with `statistics` ("bot": what the
    bot's own start-up leaves; "full": a full ANALYZE) scaled to 1 M jobs, and yield each
    statement with its plan."""
    recorded: list[Recorded] = []

    async def run() -> None:
        storage = await open_storage(history.path)  # the bot's start-up analysis
        try:
            backend = storage.backend
            assert isinstance(backend, Database)
            current = ["start-up"]
            await backend.trace(lambda sql: recorded.append(Recorded(current[0], sql)))
            await backend.optimize(starting=True)  # what a start-up runs besides the reads
            for name, call in _calls(history).items():
                current[0] = name
                await call(storage)
            await backend.trace(None)
        finally:
            await storage.close()

    asyncio.run(run())  # closing runs the bot's PRAGMA optimize too
    with sqlite3.connect(history.path) as db:
        if statistics == "full":
            db.execute("PRAGMA analysis_limit = 0")
            db.execute("ANALYZE")
        _scale_statistics(db, PRETEND_JOBS / BUILT_JOBS)
    # A new connection reads the scaled statistics. Bound values are written into the SQL,
    # which plans the same here (no STAT4); the one partial index is matched by states the
    # query writes out itself.
    with sqlite3.connect(history.path) as db:
        for entry in recorded:
            if _is_query(entry.sql):
                yield entry, _plan(db, entry.sql)


@pytest.fixture(scope="module", params=["bot", "full"])
def plans(request: pytest.FixtureRequest, built: History) -> list[tuple[Recorded, list[str]]]:
    copy = built.path.with_name(f"history-{request.param}.db")
    with sqlite3.connect(built.path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return list(_record(History(copy, built.heavy_user, built.heavy_guild), request.param))


def test_no_command_or_start_up_reads_a_big_table_whole(
    plans: list[tuple[Recorded, list[str]]],
) -> None:
    problems = [
        f"{entry.method}: {' / '.join(plan)}\n    {' '.join(entry.sql.split())[:300]}"
        for entry, plan in plans
        if _scans(plan)
    ]
    assert not problems, "full scans at 1 M jobs:\n" + "\n".join(problems)


def test_history_quota_and_start_up_use_their_own_indexes(
    plans: list[tuple[Recorded, list[str]]], built: History
) -> None:
    """/history for the heaviest member walks that member's index (not the server's), /quota
    and every charge sum the member's day from theirs, and the start-up reads the open jobs and
    the last seconds' submissions from theirs."""
    for method, index in EXPECTED_INDEX.items():
        steps = [step for entry, plan in plans if entry.method == method for step in plan]
        assert steps, f"{method} sent no query"
        assert any(f"INDEX {index} " in f"{step} " for step in steps), (method, steps)
    # The heaviest member's tens of thousands of jobs come newest first from the index itself.
    history = [step for entry, plan in plans if entry.method == "recent_jobs" for step in plan]
    assert not any("TEMP B-TREE" in step for step in history), history


# --- the statistics keep themselves ---------------------------------------------------------


def _analysed_jobs(path: Path) -> int:
    """How many of `jobs`' indexes `sqlite_stat1` describes."""
    with sqlite3.connect(path) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            return 0
        return int(db.execute("SELECT COUNT(*) FROM sqlite_stat1 WHERE tbl = 'jobs'").fetchone()[0])


def _forget_statistics(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM sqlite_stat1")


async def test_a_bot_started_on_a_year_of_history_analyses_it_before_it_is_ready(
    start_bot: StartBot, settings: Settings
) -> None:
    """An upgraded bot's first start on a big database without statistics: by READY the
    planner knows every index of `jobs`."""
    path = settings.database_path
    await asyncio.to_thread(build_history, path, 5_000)
    _forget_statistics(path)
    assert _analysed_jobs(path) == 0
    await start_bot()
    with sqlite3.connect(path) as db:
        indexes = {row[1] for row in db.execute("PRAGMA index_list(jobs)")}
        analysed = {row[0] for row in db.execute("SELECT idx FROM sqlite_stat1 WHERE tbl='jobs'")}
    # Every index with rows (no job is open or running, no batch was asked for and the history
    # predates recording each job's kie.ai account, so the partial indexes are empty).
    empty = {"jobs_open", "jobs_batch", "jobs_run_slots", "jobs_run_wanted", "jobs_kie_account"}
    assert analysed == indexes - empty


async def _grown(path: Path) -> Storage:
    """A new database (nothing to analyse at its first start) after 300 charges."""
    storage = await open_storage(path)
    limits = SpendLimits(1_000)
    for member in range(300):
        job = NewJob(member % 7, 10, 20, DAY, 1, ImageRequest("a lighthouse", "1:1", "1K"))
        assert isinstance(await storage.jobs.reserve(job, limits), Job)
    await storage.jobs.recent_jobs(1, 10, 10)
    assert _analysed_jobs(path) == 0
    return storage


async def test_the_jobs_charged_while_the_bot_runs_are_analysed_every_few_hours(
    tmp_path: Path,
) -> None:
    path = tmp_path / "grown.db"
    storage = await _grown(path)
    refresh = asyncio.create_task(keep_statistics(storage, every=0))
    try:
        await eventually(lambda: _analysed_jobs(path) > 0, what="the periodic refresh")
    finally:
        refresh.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresh
        await storage.close()


async def test_closing_the_storage_leaves_the_statistics_current(tmp_path: Path) -> None:
    path = tmp_path / "grown.db"
    storage = await _grown(path)
    await storage.close()
    assert _analysed_jobs(path) > 0
