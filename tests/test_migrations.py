"""Migrations: single statements run whole or not at all, the schema they build, and what a
database from a newer bot does to `python -m bot`."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.store.database import Database
from bot.store.migrations import MIGRATIONS, SCHEMA_VERSION, DatabaseTooNew
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie
from tests.helpers import bot_environment

# What the shipped migrations build, as `sqlite_master` holds it (whitespace collapsed). Taken
# from the schema as it stood when migrations were still one script each, split on ";": the
# change of container must not change a single object.
EXPECTED_SCHEMA = {
    (
        "table",
        "retired_kie_keys",
        "CREATE TABLE retired_kie_keys ( fingerprint TEXT PRIMARY KEY, guild_id INTEGER NOT NULL, "
        "sealed TEXT NOT NULL, retired_at REAL NOT NULL )",
    ),
    (
        "index",
        "retired_kie_keys_guild",
        "CREATE INDEX retired_kie_keys_guild ON retired_kie_keys (guild_id)",
    ),
    (
        "index",
        "jobs_kie_account",
        "CREATE INDEX jobs_kie_account ON jobs (kie_account, state) WHERE kie_account IS NOT NULL",
    ),
    (
        "table",
        "kie_rate_slots",
        "CREATE TABLE kie_rate_slots ( id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "account TEXT NOT NULL, kind TEXT NOT NULL, slots INTEGER NOT NULL CHECK (slots > 0), "
        "counts_until REAL NOT NULL, on_wire INTEGER NOT NULL )",
    ),
    (
        "table",
        "kie_rate_waiters",
        "CREATE TABLE kie_rate_waiters ( account TEXT NOT NULL, kind TEXT NOT NULL, "
        "waiter TEXT NOT NULL, since REAL NOT NULL, seen_until REAL NOT NULL, "
        "PRIMARY KEY (account, kind, waiter) )",
    ),
    (
        "index",
        "kie_rate_slots_window",
        "CREATE INDEX kie_rate_slots_window ON kie_rate_slots (account, kind, counts_until)",
    ),
    (
        "table",
        "server_kie_keys",
        "CREATE TABLE server_kie_keys ( guild_id INTEGER PRIMARY KEY, sealed TEXT NOT NULL, "
        "last_four TEXT NOT NULL, set_by INTEGER NOT NULL, set_at REAL NOT NULL )",
    ),
    (
        "table",
        "departed_servers",
        (
            "CREATE TABLE departed_servers ( guild_id INTEGER PRIMARY KEY, "
            "left_at REAL NOT NULL, purged_at REAL )"
        ),
    ),
    (
        "index",
        "reference_tray_guild",
        "CREATE INDEX reference_tray_guild ON reference_tray (guild_key)",
    ),
    (
        "index",
        "member_defaults_guild",
        "CREATE INDEX member_defaults_guild ON member_defaults (guild_key)",
    ),
    ("index", "bans_user", "CREATE INDEX bans_user ON bans (user_id)"),
    ("index", "jobs_day_spend", "CREATE INDEX jobs_day_spend ON jobs (day, state, units)"),
    (
        "index",
        "jobs_guild_day_spend",
        "CREATE INDEX jobs_guild_day_spend ON jobs (guild_id, day, state, units)",
    ),
    ("index", "jobs_state", "CREATE INDEX jobs_state ON jobs (state)"),
    (
        "index",
        "jobs_member_history",
        "CREATE INDEX jobs_member_history ON jobs (user_id, guild_id)",
    ),
    ("index", "jobs_submitted_at", "CREATE INDEX jobs_submitted_at ON jobs (submitted_at)"),
    (
        "index",
        "jobs_open",
        (
            "CREATE INDEX jobs_open ON jobs (state) "
            "WHERE state IN ('reserved', 'submitting', 'submitted', 'delivering')"
        ),
    ),
    (
        "index",
        "jobs_run_slots",
        "CREATE INDEX jobs_run_slots ON jobs (guild_id, user_id) WHERE run_slot = 1",
    ),
    (
        "index",
        "jobs_run_wanted",
        "CREATE INDEX jobs_run_wanted ON jobs (guild_id, id) WHERE run_wanted IS NOT NULL",
    ),
    (
        "index",
        "jobs_member_day_spend",
        (
            "CREATE INDEX jobs_member_day_spend "
            "ON jobs (user_id, guild_id, day, state, units, created_at)"
        ),
    ),
    (
        "index",
        "moderation_log_guild",
        "CREATE INDEX moderation_log_guild ON moderation_log (guild_id, at)",
    ),
    (
        "index",
        "quota_adjustments_member",
        ("CREATE INDEX quota_adjustments_member ON quota_adjustments (user_id, guild_id, day)"),
    ),
    (
        "table",
        "allowed_channels",
        (
            "CREATE TABLE allowed_channels ( guild_id INTEGER NOT NULL, "
            "channel_id INTEGER NOT NULL, PRIMARY KEY (guild_id, channel_id) )"
        ),
    ),
    (
        "table",
        "banned_servers",
        "CREATE TABLE banned_servers ( guild_id INTEGER PRIMARY KEY, reason TEXT )",
    ),
    (
        "table",
        "banned_users",
        "CREATE TABLE banned_users ( user_id INTEGER PRIMARY KEY, reason TEXT )",
    ),
    (
        "table",
        "bans",
        (
            "CREATE TABLE bans ( guild_id INTEGER NOT NULL, user_id INTEGER NOT NULL, "
            "banned_by INTEGER NOT NULL, reason TEXT, banned_at REAL NOT NULL, "
            "PRIMARY KEY (guild_id, user_id) )"
        ),
    ),
    (
        "table",
        "blocked_terms",
        (
            "CREATE TABLE blocked_terms ( guild_id INTEGER NOT NULL, "
            "canonical TEXT NOT NULL, term TEXT NOT NULL, added_by INTEGER NOT NULL, "
            "added_at REAL NOT NULL, PRIMARY KEY (guild_id, canonical) )"
        ),
    ),
    (
        "table",
        "global_terms",
        "CREATE TABLE global_terms ( canonical TEXT PRIMARY KEY, term TEXT NOT NULL )",
    ),
    (
        "table",
        "guild_settings",
        (
            "CREATE TABLE guild_settings ( guild_id INTEGER PRIMARY KEY, "
            "audit_channel_id INTEGER , daily_quota INTEGER, daily_budget INTEGER, "
            "max_running_per_member INTEGER, max_running INTEGER, "
            "nsfw_allowed INTEGER NOT NULL DEFAULT 0, "
            "nsfw_spoiler INTEGER NOT NULL DEFAULT 0, default_model TEXT)"
        ),
    ),
    (
        "table",
        "jobs",
        (
            "CREATE TABLE jobs ( id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "user_id INTEGER NOT NULL, guild_id INTEGER, channel_id INTEGER, "
            "day TEXT NOT NULL, units INTEGER NOT NULL CHECK (units > 0), "
            "prompt TEXT NOT NULL, aspect_ratio TEXT NOT NULL, resolution TEXT NOT NULL, "
            "state TEXT NOT NULL, task_id TEXT, error TEXT, created_at REAL NOT NULL, "
            "updated_at REAL NOT NULL , application_id INTEGER, interaction_token TEXT, "
            "interaction_at REAL, attachment_limit INTEGER, nonce TEXT, callback_token TEXT, "
            "submitted_at REAL, delivered_via TEXT, result_url TEXT, reference_url TEXT, "
            "input_url TEXT, origin TEXT NOT NULL DEFAULT 'command', parent_job_id INTEGER, "
            "quota_limit INTEGER, deleted_at REAL, nsfw_checker INTEGER NOT NULL DEFAULT 1, "
            "spoiler INTEGER NOT NULL DEFAULT 0, credits REAL, more_reference_urls TEXT, "
            "more_input_urls TEXT, image_url TEXT, delivered_at REAL, forgotten_at REAL, "
            "model TEXT NOT NULL DEFAULT 'flex', batch_id INTEGER, "
            "batch_index INTEGER NOT NULL DEFAULT 0, batch_size INTEGER NOT NULL DEFAULT 1, "
            "private INTEGER NOT NULL DEFAULT 0, locale TEXT, lease_owner TEXT, lease_until REAL, "
            "run_slot INTEGER NOT NULL DEFAULT 0, run_wanted REAL, kie_account TEXT)"
        ),
    ),
    (
        "table",
        "member_defaults",
        (
            "CREATE TABLE member_defaults ( user_id INTEGER NOT NULL, guild_key INTEGER NOT NULL, "
            "aspect_ratio TEXT, resolution TEXT CHECK (resolution IN ('1K', '2K')), "
            "private INTEGER NOT NULL DEFAULT 0, model TEXT CHECK (model IN ('flex', 'pro')), "
            "count INTEGER CHECK (count BETWEEN 1 AND 4), updated_at REAL NOT NULL, "
            "PRIMARY KEY (user_id, guild_key) ) WITHOUT ROWID"
        ),
    ),
    (
        "table",
        "reference_tray",
        (
            "CREATE TABLE reference_tray ( user_id INTEGER NOT NULL, guild_key INTEGER NOT NULL, "
            "image_key TEXT NOT NULL, url TEXT NOT NULL, filename TEXT NOT NULL, "
            "added_at REAL NOT NULL, PRIMARY KEY (user_id, guild_key, image_key) )"
        ),
    ),
    (
        "index",
        "reference_tray_added",
        "CREATE INDEX reference_tray_added ON reference_tray (added_at)",
    ),
    (
        "index",
        "jobs_batch",
        "CREATE INDEX jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL",
    ),
    (
        "index",
        "jobs_unforgotten_day",
        "CREATE INDEX jobs_unforgotten_day ON jobs (day) WHERE forgotten_at IS NULL",
    ),
    ("table", "meta", "CREATE TABLE meta ( key TEXT PRIMARY KEY, value TEXT NOT NULL )"),
    (
        "table",
        "moderation_log",
        (
            "CREATE TABLE moderation_log ( id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "guild_id INTEGER NOT NULL, user_id INTEGER NOT NULL, actor_id INTEGER, "
            "kind TEXT NOT NULL, detail TEXT, at REAL NOT NULL )"
        ),
    ),
    (
        "table",
        "owner_log",
        (
            "CREATE TABLE owner_log ( id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "actor_id INTEGER NOT NULL, action TEXT NOT NULL, target TEXT, detail TEXT, "
            "at REAL NOT NULL )"
        ),
    ),
    (
        "table",
        "quota_adjustments",
        (
            "CREATE TABLE quota_adjustments ( id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "guild_id INTEGER, user_id INTEGER NOT NULL, day TEXT NOT NULL, "
            "kind TEXT NOT NULL, units INTEGER NOT NULL DEFAULT 0, actor_id INTEGER, "
            "at REAL NOT NULL )"
        ),
    ),
    (
        "table",
        "refusal_counts",
        (
            "CREATE TABLE refusal_counts ( day TEXT NOT NULL, guild_key INTEGER NOT NULL, "
            "reason TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (day, guild_key, "
            "reason) )"
        ),
    ),
    (
        "table",
        "role_quotas",
        (
            "CREATE TABLE role_quotas ( guild_id INTEGER NOT NULL, role_id INTEGER NOT NULL, "
            "daily_quota INTEGER NOT NULL, PRIMARY KEY (guild_id, role_id) )"
        ),
    ),
    (
        "table",
        "server_caps",
        ("CREATE TABLE server_caps ( guild_key INTEGER PRIMARY KEY, daily_cap INTEGER NOT NULL )"),
    ),
}


def _schema(path: Path) -> set[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchall()
    return {(kind, name, " ".join(sql.split())) for kind, name, sql in rows}


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


async def test_a_fresh_database_has_exactly_the_expected_schema(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    database = await Database.open(path)
    await database.close()
    assert _schema(path) == EXPECTED_SCHEMA
    assert _user_version(path) == SCHEMA_VERSION == len(MIGRATIONS)


async def test_a_semicolon_inside_a_literal_or_a_trigger_is_just_text(tmp_path: Path) -> None:
    path = tmp_path / "semicolons.db"
    migrations = (
        (
            "CREATE TABLE notes (body TEXT NOT NULL)",
            "CREATE TABLE note_count (n INTEGER NOT NULL)",
            "INSERT INTO note_count (n) VALUES (0)",
            """
            CREATE TRIGGER counted AFTER INSERT ON notes BEGIN
                UPDATE note_count SET n = n + 1;
                UPDATE note_count SET n = n + 0;
            END
            """,
            "INSERT INTO notes (body) VALUES ('one; two; DROP TABLE notes;')",
        ),
    )
    database = await Database.open(path, migrations=migrations)
    await database.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT body FROM notes").fetchall() == [("one; two; DROP TABLE notes;",)]
        assert db.execute("SELECT n FROM note_count").fetchall() == [(1,)]
    assert _user_version(path) == 1


async def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "atomic.db"
    first = ("CREATE TABLE kept (id INTEGER)",)
    broken = ("CREATE TABLE half (id INTEGER)", "INSERT INTO nowhere VALUES (1)")
    database = await Database.open(path, migrations=(first,))
    await database.close()
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        await Database.open(path, migrations=(first, broken))
    assert _user_version(path) == 1
    assert {name for _, name, _ in _schema(path)} == {"kept"}


async def test_a_database_from_a_newer_bot_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    database = await Database.open(path)
    await database.close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseTooNew) as refused:
        await Database.open(path)
    message = str(refused.value)
    assert str(path) in message
    assert str(SCHEMA_VERSION + 1) in message and str(SCHEMA_VERSION) in message
    assert _user_version(path) == SCHEMA_VERSION + 1, "nothing was migrated"


async def test_a_database_from_a_newer_bot_stops_the_bot_with_one_sentence_and_status_2(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "imagine.db"
    database = await Database.open(path)
    await database.close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env=bot_environment(fake_discord, fake_kie, path),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    err = stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err + stdout.decode()
    assert str(path) in lines[0]
    assert f"schema version {SCHEMA_VERSION + 1}" in lines[0]
    assert f"up to {SCHEMA_VERSION}" in lines[0]
    assert "newer" in lines[0]
    assert _user_version(path) == SCHEMA_VERSION + 1
