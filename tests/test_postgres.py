"""The PostgreSQL backend against a real server: the same schema as SQLite's, migrations run
once however many processes start together, and charges from several processes at once never
overspend a limit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.domain import ImageRequest, Job, JobState, NewJob, OverLimit, SpendLimits
from bot.settings import Settings, SettingsError, load_settings
from bot.store import (
    DatabaseInUse,
    DatabaseTooNew,
    DatabaseUnavailable,
    PostgresTarget,
    open_storage,
)
from bot.store.database import Database
from bot.store.migrations import MIGRATIONS, SCHEMA_VERSION, Migration
from bot.store.postgres import PostgresDatabase, dialect
from bot.store.postgres.database import lock_id
from bot.store.postgres.dialect import has_integer_key
from tests.helpers import eventually
from tests.postgres import PostgresServer

DAY = "2026-12-03"
# How SQLite's declared types read in PostgreSQL's catalogue.
_TYPES = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text"}

Schema = dict[str, Any]


def _job(user_id: int, guild_id: int | None = 1, units: int = 1) -> NewJob:
    return NewJob(user_id, guild_id, None, DAY, units, ImageRequest(f"prompt {user_id}", "1:1"))


async def _sqlite_schema(path: Path, migrations: tuple[Migration, ...]) -> Schema:
    database = await Database.open(path, migrations=migrations)
    try:
        tables: dict[str, Any] = {}
        indexes: dict[str, Any] = {}
        for table, sql in await database.rows(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ):
            info = await database.rows(f"PRAGMA table_info({table})")
            key = tuple(r["name"] for r in sorted(info, key=lambda r: r["pk"]) if r["pk"])
            columns = {
                # A primary key's columns are never NULL in PostgreSQL, whatever SQLite allows.
                r["name"]: (_TYPES[r["type"]], bool(r["notnull"]) or r["name"] in key)
                for r in info
            }
            if "WITHOUT ROWID" not in sql and not has_integer_key(sql):
                columns["rowid"] = ("bigint", True)  # SQLite's implicit one, made explicit
            tables[table] = {"columns": columns, "key": key}
        for name, table in await database.rows(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ):
            info = await database.rows(f"PRAGMA index_info({name})")
            indexes[name] = (table, tuple(r["name"] for r in info))
        return {"tables": tables, "indexes": indexes}
    finally:
        await database.close()


async def _postgres_schema(url: str) -> Schema:
    connection = await asyncpg.connect(url)
    try:
        tables: dict[str, Any] = {}
        for row in await connection.fetch(
            """SELECT table_name, column_name, data_type, is_nullable
               FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name <> 'schema_migrations'"""
        ):
            table = tables.setdefault(row["table_name"], {"columns": {}, "key": ()})
            table["columns"][row["column_name"]] = (row["data_type"], row["is_nullable"] == "NO")
        indexes: dict[str, Any] = {}
        for row in await connection.fetch(
            """SELECT i.relname AS name, t.relname AS table, x.indisprimary AS primary,
                      array_agg(a.attname ORDER BY k.n) AS columns
               FROM pg_index x
               JOIN pg_class i ON i.oid = x.indexrelid
               JOIN pg_class t ON t.oid = x.indrelid
               JOIN pg_namespace s ON s.oid = t.relnamespace AND s.nspname = 'public'
               CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n)
               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
               WHERE t.relname <> 'schema_migrations'
               GROUP BY i.relname, t.relname, x.indisprimary"""
        ):
            if row["primary"]:
                tables[row["table"]]["key"] = tuple(row["columns"])
            else:
                indexes[row["name"]] = (row["table"], tuple(row["columns"]))
        return {"tables": tables, "indexes": indexes}
    finally:
        await connection.close()


async def _migrated_postgres(server: PostgresServer, migrations: tuple[Migration, ...]) -> str:
    url = server.url(server.create_database())
    database = await PostgresDatabase.open(PostgresTarget(url), migrations=migrations)
    await database.close()
    return url


async def test_both_backends_build_the_same_schema(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    sqlite = await _sqlite_schema(tmp_path / "fresh.db", MIGRATIONS)
    postgres = await _postgres_schema(await _migrated_postgres(postgres_server, MIGRATIONS))
    assert postgres["tables"].keys() == sqlite["tables"].keys()
    for table, expected in sqlite["tables"].items():
        assert postgres["tables"][table] == expected, table
    assert postgres["indexes"] == sqlite["indexes"]
    assert "jobs" in sqlite["tables"] and "jobs_open" in sqlite["indexes"], "read for real"


@pytest.mark.parametrize(
    ("later", "postgres_text"),
    [
        (("ALTER TABLE jobs ADD COLUMN region TEXT",), ()),
        (("CREATE TABLE left_servers (guild_id INTEGER PRIMARY KEY, left_at REAL NOT NULL)",), ()),
        (("CREATE INDEX jobs_channel ON jobs (channel_id)",), ()),
        (
            ("ALTER TABLE jobs ADD COLUMN region TEXT NOT NULL DEFAULT 'eu'",),
            ("ALTER TABLE jobs ADD COLUMN region TEXT DEFAULT 'eu'",),
        ),
    ],
)
async def test_a_migration_missing_from_postgresql_is_caught(
    tmp_path: Path,
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    later: Migration,
    postgres_text: Migration,
) -> None:
    """A later migration whose PostgreSQL text is wrong or missing (an override that forgot
    it) makes the schemas differ, which the test above would report."""
    migrations = (*MIGRATIONS, later)
    monkeypatch.setitem(dialect.OVERRIDES, len(migrations), postgres_text)
    sqlite = await _sqlite_schema(tmp_path / "later.db", migrations)
    postgres = await _postgres_schema(await _migrated_postgres(postgres_server, migrations))
    assert postgres != sqlite


async def test_a_later_migration_is_translated_the_same_on_both(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    later = (
        "ALTER TABLE jobs ADD COLUMN region TEXT",
        "CREATE TABLE left_servers (guild_id INTEGER PRIMARY KEY, left_at REAL NOT NULL)",
        "CREATE TABLE notes (guild_id INTEGER NOT NULL, body TEXT, PRIMARY KEY (guild_id))",
    )
    migrations = (*MIGRATIONS, later)
    sqlite = await _sqlite_schema(tmp_path / "later.db", migrations)
    postgres = await _postgres_schema(await _migrated_postgres(postgres_server, migrations))
    assert postgres == sqlite


async def test_processes_starting_together_migrate_once(postgres_server: PostgresServer) -> None:
    target = PostgresTarget(postgres_server.url(postgres_server.create_database()))
    databases = await asyncio.gather(*(PostgresDatabase.open(target) for _ in range(4)))
    try:
        versions = await databases[0].rows("SELECT version FROM schema_migrations ORDER BY 1")
        assert [row["version"] for row in versions] == list(range(1, SCHEMA_VERSION + 1))
        for database in databases:
            assert await database.schema_version() == SCHEMA_VERSION
    finally:
        for database in databases:
            await database.close()


async def test_a_database_from_a_newer_bot_is_refused(postgres_target: PostgresTarget) -> None:
    connection = await asyncpg.connect(postgres_target.url)
    await connection.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)", SCHEMA_VERSION + 1
    )
    await connection.close()
    with pytest.raises(DatabaseTooNew) as refused:
        await open_storage(postgres_target)
    assert (refused.value.found, refused.value.known) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)


async def test_a_second_bot_on_the_same_database_is_refused_until_the_first_stops(
    postgres_target: PostgresTarget,
) -> None:
    first = await open_storage(postgres_target, exclusive=True)
    with pytest.raises(DatabaseInUse):
        await open_storage(postgres_target, exclusive=True)
    tool = await open_storage(postgres_target)  # tests and tools may look in
    await tool.close()
    await first.close()
    second = await open_storage(postgres_target, exclusive=True)
    await second.close()


async def test_charges_from_two_processes_never_pass_the_total_cap(
    postgres_target: PostgresTarget,
) -> None:
    # Members of different servers: only the day's lock keeps the total within its cap.
    first, second = await open_storage(postgres_target), await open_storage(postgres_target)
    try:
        limits = SpendLimits(member=5, total_cap=15)
        results = await asyncio.gather(
            *(
                store.jobs.reserve(_job(user, guild_id=user), limits)
                for user in range(1, 11)
                for store in (first, second)
            )
        )
        assert sum(isinstance(r, Job) for r in results) == 15
        assert {r for r in results if not isinstance(r, Job)} == {OverLimit.TOTAL_CAP}
        assert await first.jobs.total_units(DAY) == await second.jobs.total_units(DAY) == 15
    finally:
        await first.close()
        await second.close()


async def test_a_charge_waits_for_another_process_charging_the_same_member(
    postgres_target: PostgresTarget,
) -> None:
    """Another process is charging member 1 (it holds the member's lock): this process's
    charges wait, counted by the checks meanwhile, and are decided on what it committed."""
    store = await open_storage(postgres_target)
    other = await asyncpg.connect(postgres_target.url)
    try:
        limits = SpendLimits(member=2, server_budget=3)
        transaction = other.transaction()
        await transaction.start()
        await other.execute("SELECT pg_advisory_xact_lock($1)", lock_id(f"member {DAY} 1 1"))
        await other.execute(
            "INSERT INTO jobs (user_id, guild_id, day, units, prompt, aspect_ratio, resolution,"
            " state, created_at, updated_at)"
            " VALUES (1, 1, $1, 1, 'elsewhere', '1:1', '1K', 'reserved', 1, 1)",
            DAY,
        )
        charges = [asyncio.create_task(store.jobs.reserve(_job(1), limits)) for _ in range(2)]
        await eventually(lambda: store.jobs.charges_waiting == 2)
        await asyncio.sleep(0.2)
        assert not any(charge.done() for charge in charges), "they wait for the lock"
        assert await store.jobs.over_limit(1, 1, DAY, 1, limits) is OverLimit.QUOTA
        await transaction.commit()
        results = await asyncio.gather(*charges)
        assert sorted(isinstance(r, Job) for r in results) == [False, True]
        assert OverLimit.QUOTA in results
        assert (await store.jobs.usage(1, 1, DAY)).used == 2
    finally:
        await other.close()
        await store.close()


def test_the_target_never_shows_its_password() -> None:
    target = PostgresTarget("postgresql://bot:hunter2-secret@db.internal:6543/imagine")
    assert target.safe == "postgresql://db.internal:6543/imagine"
    assert "hunter2" not in repr(target) and "hunter2" not in str(target)


def test_database_url_is_read_as_a_secret_postgresql_url() -> None:
    env = {"DISCORD_TOKEN": "t", "KIE_API_KEY": "k"}
    url = "postgresql://bot:hunter2-secret@db:5432/imagine"
    settings = load_settings({**env, "DATABASE_URL": url})
    assert settings.database_url == url
    assert "hunter2" not in repr(settings)
    assert load_settings(env).database_url is None
    with pytest.raises(SettingsError) as refused:
        load_settings({**env, "DATABASE_URL": "mysql://bot:hunter2-secret@db/imagine"})
    assert "DATABASE_URL" in str(refused.value) and "hunter2" not in str(refused.value)


def test_settings_default_to_sqlite() -> None:
    assert Settings(discord_token="t", kie_api_key="k").database_url is None


@pytest.mark.parametrize(
    ("sqlite", "params", "postgres", "values"),
    [
        ("SELECT 1 WHERE a = ? AND b = ?", (1, "x"), "SELECT 1 WHERE a = $1 AND b = $2", [1, "x"]),
        (
            "SELECT 1 WHERE a = :one AND b = :two AND c = :one",
            {"two": 2, "one": 1},
            "SELECT 1 WHERE a = $1 AND b = $2 AND c = $1",
            [1, 2],
        ),
        (
            "SELECT 1 FROM jobs WHERE guild_id IS :guild",
            {"guild": None},
            "SELECT 1 FROM jobs WHERE (guild_id = $1 OR (guild_id IS NULL AND $1 IS NULL))",
            [None],
        ),
        (
            "SELECT 1 WHERE a IS NULL AND b IS NOT NULL",
            (),
            "SELECT 1 WHERE a IS NULL AND b IS NOT NULL",
            [],
        ),
        (
            "SELECT ':x ?', x::text FROM t WHERE y = ?",
            ("v",),
            "SELECT ':x ?', x::text FROM t WHERE y = $1",
            ["v"],
        ),
        (
            "SELECT id FROM jobs INDEXED BY jobs_open WHERE state = ?",
            (JobState.RESERVED,),
            "SELECT id FROM jobs WHERE state = $1",
            ["reserved"],
        ),
    ],
)
def test_statements_are_translated_for_postgresql(
    sqlite: str, params: Any, postgres: str, values: list[object]
) -> None:
    assert dialect.statement(sqlite, params) == (postgres, values)


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL)",
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " at DOUBLE PRECISION NOT NULL)",
        ),
        (
            "CREATE TABLE t (k TEXT PRIMARY KEY)",
            "CREATE TABLE t (rowid BIGINT GENERATED ALWAYS AS IDENTITY, k TEXT PRIMARY KEY)",
        ),
        ("CREATE TABLE t (k INTEGER PRIMARY KEY)", "CREATE TABLE t (k BIGINT PRIMARY KEY)"),
        (
            "CREATE TABLE t (k TEXT, PRIMARY KEY (k)) WITHOUT ROWID",
            "CREATE TABLE t (k TEXT, PRIMARY KEY (k)) ",
        ),
        (
            "ALTER TABLE jobs ADD COLUMN n INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE jobs ADD COLUMN n BIGINT NOT NULL DEFAULT 0",
        ),
    ],
)
def test_migrations_are_translated_for_postgresql(sqlite: str, postgres: str) -> None:
    assert dialect.migration_statement(sqlite) == postgres


async def test_a_user_who_may_not_create_tables_is_told_in_one_sentence(
    postgres_server: PostgresServer,
) -> None:
    name = postgres_server.create_database()
    owner = await asyncpg.connect(postgres_server.url(name))
    await owner.execute("CREATE ROLE reader LOGIN")
    await owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    await owner.close()
    url = postgres_server.url(name).replace("postgresql://postgres@", "postgresql://reader@")
    with pytest.raises(DatabaseUnavailable) as refused:
        await open_storage(PostgresTarget(url))
    assert "permission denied" in str(refused.value)


async def test_two_processes_racing_one_job_change_its_state_once(
    postgres_target: PostgresTarget,
) -> None:
    first, second = await open_storage(postgres_target), await open_storage(postgres_target)
    try:
        job = await first.jobs.reserve(_job(1), SpendLimits(member=5))
        assert isinstance(job, Job)
        submits = await asyncio.gather(
            *(store.jobs.begin_submit(job.id) for store in (first, second) for _ in range(5))
        )
        assert submits.count(True) == 1, "submitted once, whichever process asked"
        refunds = await asyncio.gather(
            *(store.jobs.refund(job.id, "failed") for store in (first, second) for _ in range(5))
        )
        assert refunds.count(True) == 1, "refunded once"
        assert (await second.jobs.usage(1, 1, DAY)).used == 0
    finally:
        await first.close()
        await second.close()
