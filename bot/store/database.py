"""The SQLite database: opening it privately, the one shared connection, its transactions, and
bringing its schema up to date. The repositories beside this module hold the SQL over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiosqlite

from bot.store.backup import backup_database
from bot.store.migrations import MIGRATIONS, DatabaseTooNew, Migration
from bot.store.sql import Params

log = logging.getLogger(__name__)

# How many entries of each index an ANALYZE reads (SQLite's approximate analysis): a few
# milliseconds on a million jobs, where reading them all takes over a second.
ANALYSIS_LIMIT = 1000

# Set inside a transaction, for the task running it: its reads go to the writing connection, so
# they see the transaction's own uncommitted writes.
_in_transaction: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "_in_transaction", default=False
)


def _private_files(path: Path) -> None:
    """The database holds live interaction tokens, callback secrets and every prompt: its folder
    is created 0700 and its files are 0600 (SQLite gives its -wal and -shm files the database
    file's mode, so creating that one first is enough; older files are tightened)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(file, 0o600)


def _connect_on_loop(path: Path) -> sqlite3.Connection:
    """`Database.lookup`'s connection: read-only, opened on the event loop's thread and only
    ever used there (sqlite3 checks), and never waiting for a lock (the reader does that)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA busy_timeout=0")
        connection.execute("PRAGMA query_only=1")
    except BaseException:
        connection.close()
        raise
    return connection


class SqliteTransaction:
    """Statements inside one of `Database.transaction`'s IMMEDIATE transactions."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, params: Params = ()) -> None:
        await self._db.execute(sql, params)

    async def insert(self, sql: str, params: Params = ()) -> int:
        cursor = await self._db.execute(sql, params)
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def lock(self, keys: Sequence[str]) -> None:
        """Nothing to do: an IMMEDIATE transaction holds the whole database's write lock."""


class Database:
    """The bot's SQLite file, the one writing connection every repository shares, and two
    read-only connections beside it (one on aiosqlite's thread, one for `lookup` on the loop's).

    It owns the connections, the write lock that keeps one coroutine's transaction from
    interleaving with another's statements, and the schema's version. Reads outside a
    transaction go to the reading connection (WAL lets it read the last commit while a write
    is under way), so a command's checks never queue behind a burst of charges and their
    fsyncs. `open_storage` opens it
    once at start-up (running any pending migrations) and the repositories in this package call
    it for every statement; it lives until the bot closes the storage at shutdown. Rows come back
    as `sqlite3.Row`, read by column name.
    """

    lock_rows = ""  # one writer at a time: a transaction's reads stay true until it commits
    several_processes = False  # one bot process per file (`bot.single`)

    def __init__(self, db: aiosqlite.Connection, path: Path, clock: Callable[[], float]) -> None:
        self._db = db
        self._reader = db  # until `_open_readers`: one connection (and always for ":memory:")
        self._on_loop: sqlite3.Connection | None = None  # `lookup`'s (not for ":memory:")
        self._path = path
        self.clock = clock
        # One connection is shared by all coroutines; a transaction spanning several awaits
        # must not interleave with another coroutine's statements.
        self._write = asyncio.Lock()
        self._writers_waiting = 0  # for `writers_waiting`

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Database:
        """Open (creating it privately if needed) and migrate. Raises `DatabaseTooNew` when a
        newer bot last migrated the file, `OSError` or `sqlite3.Error` when it cannot be used."""
        if str(path) != ":memory:":
            await asyncio.to_thread(_private_files, path)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA busy_timeout=5000")
            # FULL: a state change is on disk before the side effect it announces happens.
            await db.execute("PRAGMA synchronous=FULL")
            database = cls(db, path, clock)
            await database._migrate(migrations)
            if str(path) != ":memory:":
                await database._open_readers()
        except BaseException:
            await db.close()
            raise
        return database

    async def _open_readers(self) -> None:
        reader = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            reader.row_factory = sqlite3.Row
            await reader.execute("PRAGMA busy_timeout=5000")
            await reader.execute("PRAGMA query_only=1")
            self._on_loop = _connect_on_loop(self._path)
        except BaseException:
            await reader.close()
            raise
        self._reader = reader

    async def close(self) -> None:
        """Close every connection, bringing the planner's statistics up to date first (best
        effort: a database that cannot take a write now still closes)."""
        with contextlib.suppress(sqlite3.Error):
            await self.optimize()
        # A transaction under way (a batch of charges) ends first: it commits or rolls back.
        async with self._writing():
            if self._on_loop is not None:
                self._on_loop.close()
                self._on_loop = None
            if self._reader is not self._db:
                await self._reader.close()
            await self._db.close()

    async def optimize(self, *, starting: bool = False) -> None:
        """Keep the query planner's statistics (`sqlite_stat1`) current, within a bound.

        SQLite's advice, followed: `PRAGMA optimize` at start (`starting`), every few hours and
        before closing; it analyses only the tables whose statistics are missing or stale. An
        SQLite before 3.46 skips that at start, so a `jobs` table with rows and no statistics
        (an upgraded bot's first start, or a run that ended without closing) is analysed here
        then. Each ANALYZE
        reads at most `ANALYSIS_LIMIT` entries per index: milliseconds at a million jobs.
        """
        await self.execute(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}")
        if starting and await self._unanalysed("jobs"):
            await self.execute("ANALYZE")
        else:
            # 0x10000 (SQLite 3.46+): look at every table, not only those queried so far.
            await self.execute("PRAGMA optimize = 0x10002" if starting else "PRAGMA optimize")

    async def trace(self, callback: Callable[[str], object] | None) -> None:
        """Call `callback` with every statement's SQL (bound values written in) as it runs, on
        the database's thread; None stops. For tests that check what the repositories ask."""
        # sqlite3 takes None to stop; aiosqlite's annotation leaves that out.
        await self._db.set_trace_callback(callback)  # type: ignore[arg-type]
        if self._reader is not self._db:
            await self._reader.set_trace_callback(callback)  # type: ignore[arg-type]
        if self._on_loop is not None:
            self._on_loop.set_trace_callback(callback)

    async def _unanalysed(self, table: str) -> bool:
        """Whether `table` has rows but `sqlite_stat1` says nothing of it."""
        exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        if not await self.rows(exists, (table,)):
            return False
        # max(rowid) reads one entry, where any other "has rows" question could scan.
        if (await self.rows(f'SELECT max(rowid) FROM "{table}"'))[0][0] is None:
            return False
        if not await self.rows(exists, ("sqlite_stat1",)):
            return True
        return not await self.rows("SELECT 1 FROM sqlite_stat1 WHERE tbl = ?", (table,))

    async def writable(self) -> bool:
        """Whether a write transaction can be opened and committed now (for readiness)."""
        try:
            async with self.transaction():
                pass
        except sqlite3.Error:
            return False
        return True

    async def schema_version(self) -> int:
        rows = await self.rows("PRAGMA user_version")
        return int(rows[0][0]) if rows else 0

    async def rows(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """A read: of the last commit, or inside a transaction, of what it has written so far."""
        # Execute and fetch in one call on aiosqlite's thread, so no other coroutine's
        # statement can run in between and disturb the cursor.
        connection = self._db if _in_transaction.get() else self._reader
        return list(await connection.execute_fetchall(sql, params))

    async def lookup(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """`rows` for a read of a few rows through an index (a member's defaults, their tray),
        answered at once on the event loop's thread from a connection of its own.

        A trip to aiosqlite's thread costs about ten times such a read (about 110 µs of CPU,
        most of it holding the GIL, against 11 µs): in a burst that is a good part of each
        command's time to its acknowledgement. Only for reads whose size does not grow with
        the database: anything else would stall the loop, and goes to `rows`. Inside a
        transaction (its own writes must show), or where SQLite would have to wait for a lock,
        it is `rows`.
        """
        if self._on_loop is None or _in_transaction.get():
            return await self.rows(sql, params)
        try:
            return self._on_loop.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            # Locked or busy (busy_timeout is 0 here): the reader waits, off the loop. Any
            # other error is raised again there.
            return await self.rows(sql, params)

    def writers_waiting(self) -> bool:
        """Whether a write waits for the writing connection. A group of charges commits early
        for it (`SqlJobLedger`): in a burst each statement of a long transaction waits a turn
        of the busy event loop, and a job's claim to be sent would wait for all of them."""
        return self._writers_waiting > 0

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        """The writing connection, alone; counted in `writers_waiting` until it is ours."""
        self._writers_waiting += 1
        try:
            await self._write.acquire()
        finally:
            self._writers_waiting -= 1
        try:
            yield
        finally:
            self._write.release()

    async def execute(self, sql: str, params: Params = ()) -> None:
        """Run one write on its own (SQLite makes a single statement atomic)."""
        async with self._writing():
            await self._db.execute(sql, params)

    async def changed(self, sql: str, params: Params = ()) -> bool:
        """Run one write; True when it changed exactly one row."""
        async with self._writing():
            cursor = await self._db.execute(sql, params)
        return cursor.rowcount == 1

    async def changed_count(self, sql: str, params: Params = ()) -> int:
        """Run one write; how many rows it changed."""
        async with self._writing():
            cursor = await self._db.execute(sql, params)
        return max(cursor.rowcount, 0)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """One IMMEDIATE transaction under the write lock; statements inside run through what
        it yields (`rows` may be used too: reads take no lock)."""
        # IMMEDIATE takes the write lock up front (waiting up to busy_timeout for another
        # process), so the reads inside the transaction see what the write will be based on.
        async with self._writing():
            await self._db.execute("BEGIN IMMEDIATE")
            inside = _in_transaction.set(True)
            try:
                yield SqliteTransaction(self._db)
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            finally:
                _in_transaction.reset(inside)
            await self._db.execute("COMMIT")

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        current = await self.schema_version()
        if current > len(migrations):
            raise DatabaseTooNew(self._path, current, len(migrations))
        if 0 < current < len(migrations) and str(self._path) != ":memory:":
            # An upgrade: a copy of the database as it was comes first, to go back to.
            copy = self._path.with_name(f"{self._path.name}.before-v{len(migrations)}.bak")
            with contextlib.suppress(FileNotFoundError):
                copy.unlink()  # an earlier attempt at this same upgrade
            await asyncio.to_thread(backup_database, self._path, copy)
            log.info("database at schema version %d backed up to %s", current, copy)
        for version in range(current + 1, len(migrations) + 1):
            async with self.transaction() as db:
                for statement in migrations[version - 1]:
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {version}")
            if current:
                log.info("database migrated to schema version %d", version)
