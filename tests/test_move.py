"""`imagine-bot move-to-postgres`: a SQLite database made by the repositories and by the real
bot, moved by the command itself into the PostgreSQL server the suite starts, then read back
row for row, and served by a bot on PostgreSQL that sees the same quotas and history."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.domain import (
    AdjustmentKind,
    DeliveryRoute,
    ImageRequest,
    JobState,
    LogKind,
    MemberDefaults,
    NewJob,
    OverLimit,
    RetiredKey,
    SealedKey,
    SpendLimits,
    TrayImage,
)
from bot.settings import Settings
from bot.single import SingleProcessLock
from bot.store import BanList, PostgresTarget, open_storage
from bot.store.database import Database
from bot.store.migrations import MIGRATIONS
from bot.store.move import NOT_MOVED
from bot.store.postgres import PostgresDatabase
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie
from tests.helpers import READY_TITLE, embed_title, final_answer

DAY = "2026-12-03"
GUILD = 10
RETIRED = "5e1f" * 8  # a retired key's account name (a hash of the key)
PASSWORD = "pg-Secret-8812"
ROOT = Path(__file__).resolve().parent.parent
LIMITS = SpendLimits(member=100)


def _with_password(target: PostgresTarget) -> str:
    # The test server trusts loopback, so any password is accepted: enough to see it hidden.
    return target.url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


async def _move(
    database: Path, target: PostgresTarget, *args: str, cwd: Path
) -> tuple[int, str, str]:
    """`python -m bot move-to-postgres` as an operator runs it, with DATABASE_URL carrying a
    password; its exit status, stdout and stderr."""
    env = bot_environment_minimal(database, _with_password(target))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "move-to-postgres",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def bot_environment_minimal(database: Path, url: str) -> dict[str, str]:
    # The command reads DATABASE_PATH and DATABASE_URL only: no token, no key needed.
    env = os.environ.copy()
    for name in ("DISCORD_TOKEN", "KIE_API_KEY", "DATABASE_PATH", "DATABASE_URL"):
        env.pop(name, None)
    env.update(DATABASE_PATH=str(database), DATABASE_URL=url, PYTHONPATH=str(ROOT))
    return env


async def _fill(path: Path) -> dict[JobState, int]:
    """A database with something in every table: jobs in every state, a server's settings,
    blocklist, bans and log, the operator's caps and bans, a tray, defaults, a departure."""
    storage = await open_storage(path)
    try:
        jobs = storage.jobs
        made = []
        for n in range(7):
            new = NewJob(n % 3 + 1, GUILD, 55, DAY, 1 + n % 2, ImageRequest(f"picture {n}", "1:1"))
            job = await jobs.reserve(new, LIMITS)
            assert not isinstance(job, type(None)) and hasattr(job, "id")
            made.append(job.id)  # type: ignore[union-attr]
        batch = await jobs.reserve_batch(
            NewJob(1, GUILD, 55, DAY, 1, ImageRequest("a batch", "1:1"), count=2), LIMITS
        )
        assert isinstance(batch, list)
        _reserved, submitting, submitted, delivering, delivered, refunded, cancelled = made
        assert await jobs.begin_submit(submitting)
        for job_id in (submitted, delivering, delivered):
            assert await jobs.begin_submit(job_id, RETIRED)  # sent with a since retired key
            assert await jobs.mark_submitted(job_id, f"task-{job_id}")
        assert await jobs.begin_delivery(delivering, "https://tempfile.example/a.png")
        assert await jobs.begin_delivery(delivered, "https://tempfile.example/b.png")
        assert await jobs.mark_delivered(delivered, DeliveryRoute.REPLY, "https://discord/m/1")
        await jobs.set_job_credits(delivered, 3.5)
        assert await jobs.refund(refunded, "kie.ai failed")
        assert await jobs.cancel(cancelled, "cancelled by the member")
        await jobs.add_quota_adjustment(GUILD, 1, DAY, AdjustmentKind.GRANT, 3, 9)

        await storage.settings.set_policy_value(GUILD, "daily_quota", 25)
        await storage.settings.set_role_quota(GUILD, 3, 5)
        await storage.settings.set_audit_channel(GUILD, 77)
        await storage.settings.allow_channel(GUILD, 55)
        await storage.moderation.add_blocked_term(GUILD, "gore", "Gore", 9)
        await storage.moderation.add_global_term("spam", "SPAM")
        await storage.moderation.ban(GUILD, 4, 9, "spam")
        await storage.moderation.log_moderation(GUILD, 2, LogKind.DAILY_QUOTA, "25", 9)
        await storage.moderation.count_refusal(DAY, GUILD, "blocked")
        await storage.operator.set_server_cap(GUILD, 50)
        await storage.operator.ban_everywhere(BanList.USERS, 6, "abuse")
        await storage.operator.ban_everywhere(BanList.SERVERS, 12, None)
        await storage.operator.log_owner_action(1, "cap", "10", "50")
        await storage.meta.set("kie.credits.warned", "1")
        now = time.time()
        tray = [
            TrayImage(f"att{n}", f"https://cdn.example/{n}.png", f"{n}.png", now) for n in (1, 2)
        ]
        await storage.trays.add(2, GUILD, tray, now - 3600, 4)
        await storage.members.set_defaults(2, GUILD, MemberDefaults("16:9", "2K", True, None, 2))
        await storage.departures.record_departure(11, now - 60)
        await storage.server_keys.put_server_key(SealedKey(GUILD, "gAAAA-old", "cd34", 9, now))
        retired = RetiredKey(RETIRED, GUILD, "gAAAA-old", now)
        await storage.server_keys.retire_server_key(
            retired, SealedKey(GUILD, "gAAAA-sealed", "ab12", 9, now)
        )
        return await jobs.count_by_state()
    finally:
        await storage.close()


def _normal(value: Any) -> Any:
    # SQLite may keep 5 in a REAL column; PostgreSQL gives 5.0 back. They are the same value.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _sqlite_tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        names = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
            if row[0] not in NOT_MOVED  # PostgreSQL's own rate windows
        ]
        tables: dict[str, list[tuple[Any, ...]]] = {}
        for name in names:
            cursor = db.execute(f"SELECT * FROM {name}")
            columns = sorted(d[0] for d in cursor.description)
            rows = db.execute(f"SELECT {', '.join(columns)} FROM {name}").fetchall()
            tables[name] = sorted((tuple(_normal(v) for v in row) for row in rows), key=repr)
    return tables


async def _postgres_tables(url: str, names: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    connection = await asyncpg.connect(url)
    try:
        tables: dict[str, list[tuple[Any, ...]]] = {}
        for name in names:
            found = await connection.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = $1 AND column_name <> 'rowid'",
                name,
            )
            columns = sorted(row[0] for row in found)
            rows = await connection.fetch(f"SELECT {', '.join(columns)} FROM {name}")
            tables[name] = sorted((tuple(_normal(v) for v in row) for row in rows), key=repr)
        return tables
    finally:
        await connection.close()


async def test_every_table_arrives_row_for_row_and_the_summary_hides_the_password(
    tmp_path: Path, postgres_target: PostgresTarget
) -> None:
    database = tmp_path / "data" / "imagine.db"
    states = await _fill(database)
    assert set(states) == set(JobState), "the database has jobs in every state"
    before = _sqlite_tables(database)
    assert all(before.values()), [name for name, rows in before.items() if not rows]

    status, out, err = await _move(database, postgres_target, cwd=tmp_path)

    assert status == 0, err
    assert PASSWORD not in out + err
    assert postgres_target.safe in out
    assert f"  jobs: {len(before['jobs'])} rows" in out
    after = await _postgres_tables(postgres_target.url, list(before))
    assert after == before

    storage = await open_storage(postgres_target)
    try:
        assert await storage.jobs.count_by_state() == states
        usage = await storage.jobs.usage(1, GUILD, DAY)
        assert usage.granted == 3
        assert (await storage.settings.server_policy(GUILD)).daily_quota == 25
        assert await storage.moderation.blocked_terms(GUILD) == ["Gore"]
        assert await storage.operator.banned_everywhere(BanList.USERS) == {6}
        assert [image.key for image in await storage.trays.tray(2, GUILD, time.time() - 3600)] == [
            "att1",
            "att2",
        ]
        assert (await storage.members.defaults(2, GUILD)).resolution == "2K"
        assert [d.guild_id for d in await storage.departures.departures()] == [11]
        assert [k.last_four for k in await storage.server_keys.server_keys()] == ["ab12"]
        # Ids go on from the highest copied: a new row never collides with an old one.
        with contextlib.closing(sqlite3.connect(database)) as db:
            old = db.execute("SELECT max(id) FROM jobs").fetchone()[0]
        new = await storage.jobs.reserve(
            NewJob(1, GUILD, 55, DAY, 1, ImageRequest("after the move", "1:1")), LIMITS
        )
        assert not isinstance(new, OverLimit) and new.id > old
        await storage.moderation.log_moderation(GUILD, 2, LogKind.DAILY_QUOTA, "30", 9)
        log = await storage.moderation.moderation_events(GUILD)
        assert len(log) == 2
    finally:
        await storage.close()


async def test_a_database_that_already_holds_data_is_refused_unless_forced(
    tmp_path: Path, postgres_target: PostgresTarget
) -> None:
    database = tmp_path / "imagine.db"
    await _fill(database)
    assert (await _move(database, postgres_target, cwd=tmp_path))[0] == 0

    status, out, err = await _move(database, postgres_target, cwd=tmp_path)
    assert status == 1
    assert "already holds data" in err and "--force" in err and "nothing was moved" in err
    assert PASSWORD not in out + err

    status, out, err = await _move(database, postgres_target, "--force", cwd=tmp_path)
    assert status == 0, err
    before = _sqlite_tables(database)
    assert await _postgres_tables(postgres_target.url, list(before)) == before


async def test_nothing_moves_while_a_bot_runs_on_the_file_or_without_a_file(
    tmp_path: Path, postgres_target: PostgresTarget
) -> None:
    database = tmp_path / "imagine.db"
    await _fill(database)
    lock = SingleProcessLock(database)  # what a running bot holds
    lock.acquire()
    try:
        status, _, err = await _move(database, postgres_target, cwd=tmp_path)
    finally:
        lock.release()
    assert status == 1 and "a bot is running on DATABASE_PATH" in err

    status, _, err = await _move(tmp_path / "missing.db", postgres_target, cwd=tmp_path)
    assert status == 1 and "no SQLite database" in err
    assert not (tmp_path / "missing.db").exists()

    connection = await asyncpg.connect(postgres_target.url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM jobs") == 0
    finally:
        await connection.close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, database_url=None)  # the bot starts on SQLite, whatever the run


async def test_a_bot_on_postgres_after_the_move_sees_the_same_quota_and_history(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    postgres_target: PostgresTarget,
    settings: Settings,
    tmp_path: Path,
) -> None:
    on_sqlite = await start_bot()
    first = await fake_discord.send_interaction("imagine", {"prompt": "a red kite"}, user_id=111)
    assert embed_title(await final_answer(fake_discord, first)) == READY_TITLE
    await on_sqlite.idle()
    old_ids = {
        job.id for job in await on_sqlite.storage.jobs.recent_jobs(111, fake_discord.guild_id, 10)
    }
    assert len(old_ids) == 1
    await on_sqlite.bot.close()

    status, _, err = await _move(settings.database_path, postgres_target, cwd=tmp_path)
    assert status == 0, err

    on_postgres = await start_bot(database_url=postgres_target.url)
    quota = await fake_discord.send_interaction("quota", user_id=111)
    assert "used **1**" in (await final_answer(fake_discord, quota)).json["content"]
    second = await fake_discord.send_interaction("imagine", {"prompt": "a blue kite"}, user_id=111)
    assert embed_title(await final_answer(fake_discord, second)) == READY_TITLE
    await on_postgres.idle()
    jobs = await on_postgres.storage.jobs.recent_jobs(111, fake_discord.guild_id, 10)
    assert {job.image.prompt for job in jobs} == {"a red kite", "a blue kite"}
    (new_id,) = {job.id for job in jobs} - old_ids
    assert new_id > max(old_ids)
    assert await on_postgres.units_charged() == 2


async def test_an_older_sqlite_database_is_brought_up_to_date_first_with_its_backup(
    tmp_path: Path, postgres_target: PostgresTarget
) -> None:
    database = tmp_path / "imagine.db"
    older = await Database.open(database, migrations=MIGRATIONS[:-1])
    await older.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)", ("from the older version", "kept")
    )
    await older.close()

    status, out, err = await _move(database, postgres_target, cwd=tmp_path)

    assert status == 0, err
    assert f"(schema version {len(MIGRATIONS)})" in out
    assert (tmp_path / f"imagine.db.before-v{len(MIGRATIONS)}.bak").exists()
    storage = await open_storage(postgres_target)
    try:
        assert await storage.meta.get("from the older version") == "kept"
    finally:
        await storage.close()


async def test_a_row_postgresql_cannot_take_moves_nothing_at_all(
    tmp_path: Path, postgres_target: PostgresTarget
) -> None:
    database = tmp_path / "imagine.db"
    await _fill(database)
    # SQLite keeps any value in any column: one that PostgreSQL refuses, in a late table.
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("INSERT INTO server_caps (guild_key, daily_cap) VALUES (13, 'lots')")

    status, out, err = await _move(database, postgres_target, cwd=tmp_path)

    assert status == 1
    assert "server_caps" in err and "nothing was moved" in err and PASSWORD not in out + err
    connection = await asyncpg.connect(postgres_target.url)
    try:
        for table in ("jobs", "meta", "guild_settings", "reference_tray"):
            assert await connection.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await connection.close()


async def test_nothing_moves_while_a_bot_runs_on_postgresql_or_with_a_wrong_argument(
    tmp_path: Path, postgres_target: PostgresTarget
) -> None:
    database = tmp_path / "imagine.db"
    await _fill(database)
    running = await PostgresDatabase.open(postgres_target, exclusive=True)  # as a bot holds it
    try:
        status, out, err = await _move(database, postgres_target, cwd=tmp_path)
    finally:
        await running.close()
    assert status == 1 and f"a bot is running on {postgres_target.safe}" in err
    assert PASSWORD not in out + err

    status, _, err = await _move(database, postgres_target, "--yes", cwd=tmp_path)
    assert status == 2 and err.startswith("usage: imagine-bot move-to-postgres")
