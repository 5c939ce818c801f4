"""Moving a SQLite database into PostgreSQL (`imagine-bot move-to-postgres`).

Every table of the SQLite file is copied, in batches through PostgreSQL's COPY, into the same
tables of a freshly migrated PostgreSQL database, all in one transaction: the target has either
everything or nothing. Ids are copied as they are (history, tray entries and audit lines keep
theirs), and the identity sequences are then moved past the highest, so a new job gets a fresh
id. Before the commit, each table's row count and the units charged are compared on both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import asyncpg

from bot.store.database import Database
from bot.store.jobs import SqlJobLedger
from bot.store.postgres import PostgresDatabase, PostgresTarget

BATCH = 5000  # rows per COPY: a few MB at most, however long the history
# PostgreSQL's own: the rate windows its processes share (always empty on SQLite). Those of
# the target are real recent calls to kie.ai: neither copied nor cleared.
NOT_MOVED = ("kie_rate_slots", "kie_rate_waiters")


class MoveError(Exception):
    """The move cannot be made, or did not add up; one sentence without secrets. Nothing was
    written to PostgreSQL."""


@dataclass(frozen=True)
class MoveSummary:
    schema_version: int
    rows: dict[str, int]  # per table, as copied (and counted again on PostgreSQL)
    units_charged: int


@dataclass(frozen=True)
class _Column:
    name: str
    convert: Callable[[object], object]


def _integer(value: object) -> object:
    return int(value) if isinstance(value, (int, float, str)) else value


def _float(value: object) -> object:
    return float(value) if isinstance(value, (int, float, str)) else value


def _text(value: object) -> object:
    # SQLite keeps whatever it was given; PostgreSQL's text column wants text.
    return str(value) if isinstance(value, (int, float)) else value


def _as_is(value: object) -> object:
    return value


_CONVERT: dict[str, Callable[[object], object]] = {
    "bigint": _integer,
    "integer": _integer,
    "smallint": _integer,
    "double precision": _float,
    "real": _float,
    "text": _text,
}


async def move_to_postgres(
    source: Path, target: PostgresTarget, *, force: bool = False, batch: int = BATCH
) -> MoveSummary:
    """Copy the SQLite database at `source` into the PostgreSQL database at `target`.

    The caller keeps the bot off `source` meanwhile (its lock file). `source` is migrated to
    this version's schema first (with the usual `.before-vN.bak` copy) and `target` is created
    or migrated to it. A target that already holds rows is refused unless `force`, which
    empties it first (in the same transaction). Raises `MoveError`; `DatabaseTooNew`,
    `DatabaseInUse` (a bot runs on `target`) and `DatabaseUnavailable` come through as they are.
    """
    if not await asyncio.to_thread(source.is_file):
        raise MoveError(f"there is no SQLite database at {source}")
    sqlite_db = await Database.open(source)  # brings an older file up to this version
    try:
        version = await sqlite_db.schema_version()
        units = await SqlJobLedger(sqlite_db).total_units_charged()
    finally:
        await sqlite_db.close()
    pg = await PostgresDatabase.open(target, exclusive=True)
    try:
        if await pg.schema_version() != version:
            raise MoveError(
                f"{target.safe} is at schema version {await pg.schema_version()}, the SQLite "
                f"database at {version}: use an empty PostgreSQL database"
            )
        try:
            rows = await _copy(source, pg, target, force, batch, units)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            raise MoveError(f"{target.safe} refused the copy: {error}") from None
    finally:
        await pg.close()
    return MoveSummary(schema_version=version, rows=rows, units_charged=units)


async def _copy(
    source: Path,
    pg: PostgresDatabase,
    target: PostgresTarget,
    force: bool,
    batch: int,
    units: int,
) -> dict[str, int]:
    """Every table, in one PostgreSQL transaction; rows copied per table."""
    # A read-only connection: the copy cannot change the file, and sees one snapshot.
    async with aiosqlite.connect(f"file:{source}?mode=ro", uri=True) as reader:
        await reader.execute("BEGIN")
        tables = await _tables(reader)
        async with pg.transaction():
            await _make_room(pg, tables, target, force)
            rows = {table: await _copy_table(reader, pg, table, batch) for table in tables}
            await _reset_identities(pg, tables)
            await _verify(pg, rows, units)
        await reader.execute("ROLLBACK")
    return rows


async def _tables(reader: aiosqlite.Connection) -> list[str]:
    found = await reader.execute_fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    )
    return [str(row[0]) for row in found if str(row[0]) not in NOT_MOVED]


async def _make_room(
    pg: PostgresDatabase, tables: Sequence[str], target: PostgresTarget, force: bool
) -> None:
    busy = [table for table in tables if (await pg.rows(f"SELECT 1 FROM {table} LIMIT 1"))]
    if not busy:
        return
    if not force:
        raise MoveError(
            f"{target.safe} already holds data (in {', '.join(busy)}): use an empty database, "
            "or --force to replace what it holds"
        )
    await pg.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")


async def _pg_columns(pg: PostgresDatabase, table: str) -> list[_Column]:
    found = await pg.rows(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (table,),
    )
    return [_Column(str(row[0]), _CONVERT.get(str(row[1]), _as_is)) for row in found]


async def _copy_table(
    reader: aiosqlite.Connection, pg: PostgresDatabase, table: str, batch: int
) -> int:
    columns = await _pg_columns(pg, table)
    if not columns:
        raise MoveError(f"PostgreSQL has no table {table}")
    info = await reader.execute_fetchall(f"PRAGMA table_info({table})")
    have = {str(row[1]) for row in info}
    # A table with SQLite's implicit rowid has it as a column of its own on PostgreSQL
    # (bot.store.postgres.dialect): copied too, since a few queries order by it.
    names = [column.name for column in columns]
    missing = [name for name in names if name not in have and name != "rowid"]
    extra = sorted(have - set(names))
    if missing or extra:
        raise MoveError(f"the table {table} differs between the two databases")
    copied = 0
    cursor = await reader.execute(f"SELECT {', '.join(names)} FROM {table}")
    while chunk := await cursor.fetchmany(batch):
        try:
            records = [
                tuple(column.convert(value) for column, value in zip(columns, row, strict=True))
                for row in chunk
            ]
        except (TypeError, ValueError):
            # SQLite takes any value in any column; PostgreSQL does not.
            raise MoveError(f"a row of {table} holds a value of the wrong type") from None
        await pg.copy_records(table, names, records)
        copied += len(records)
    await cursor.close()
    return copied


async def _reset_identities(pg: PostgresDatabase, tables: Sequence[str]) -> None:
    """Move each identity sequence past the highest id copied: the next job gets max + 1."""
    found = await pg.rows(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES'"
    )
    for table, column in ((str(row[0]), str(row[1])) for row in found):
        if table not in tables:
            continue
        await pg.rows(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
            f" COALESCE(max({column}), 0) + 1, false) FROM {table}"
        )


async def _verify(pg: PostgresDatabase, rows: dict[str, int], units: int) -> None:
    """Count again on PostgreSQL, inside the transaction: a mismatch rolls everything back."""
    for table, expected in rows.items():
        counted = int((await pg.rows(f"SELECT count(*) FROM {table}"))[0][0])
        if counted != expected:
            raise MoveError(
                f"{table} has {counted} rows on PostgreSQL but {expected} in SQLite; "
                "nothing was written"
            )
    moved = await SqlJobLedger(pg).total_units_charged()
    if moved != units:
        raise MoveError(
            f"the units charged are {moved} on PostgreSQL but {units} in SQLite; "
            "nothing was written"
        )


__all__ = ["MoveError", "MoveSummary", "move_to_postgres"]
