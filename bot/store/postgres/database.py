"""The PostgreSQL database: a pool of asyncpg connections, its transactions, bringing its schema
up to date once however many processes start together, and an optional lock that keeps one
process per database (`exclusive`; the bot itself runs several, sharing jobs by lease:
`bot.leases`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.store.interfaces import DatabaseInUse
from bot.store.migrations import MIGRATIONS, DatabaseTooNew, Migration
from bot.store.postgres import dialect
from bot.store.sql import Params

log = logging.getLogger(__name__)

# Advisory lock ids (pg_advisory_lock's one-bigint space): migrating, and "a bot runs here".
MIGRATION_LOCK = 0x696D6167696E6501  # "imagine" 1
PROCESS_LOCK = 0x696D6167696E6502
CLAIM_WAIT = 3.0  # seconds a starting bot waits for a dead predecessor's session to end
# The server checks the lock holder's connection this often (seconds), so a dead machine's
# lock is freed in idle + interval * count, not the operating system's two hours.
_KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}

# The connection of the transaction the running task is inside, if any: its reads and writes
# go there, so they see (and are part of) what it has written so far.
_Connection = asyncpg.Connection | PoolConnectionProxy
_current: contextvars.ContextVar[_Connection | None] = contextvars.ContextVar(
    "_current", default=None
)


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or used; the message is one sentence without secrets."""


@dataclass(frozen=True)
class PostgresTarget:
    """A `postgresql://` URL (DATABASE_URL). Its password is never shown: `repr` and `safe`
    give the host and database only."""

    url: str

    @property
    def safe(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"postgresql://{host}{port}/{parts.path.lstrip('/')}"

    def __repr__(self) -> str:
        return f"PostgresTarget({self.safe!r})"

    __str__ = __repr__


def lock_id(key: str) -> int:
    """A stable signed 64-bit advisory lock id for `key` (a collision only makes two charges
    wait for each other)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _count(status: str) -> int:
    """Rows a command changed, from its status ("UPDATE 3", "INSERT 0 1")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresTransaction:
    """Statements inside one of `PostgresDatabase.transaction`'s transactions."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, params: Params = ()) -> None:
        text, values = dialect.statement(sql, params)
        await self._connection.execute(text, *values)

    async def insert(self, sql: str, params: Params = ()) -> int:
        text, values = dialect.statement(sql, params)
        return int(await self._connection.fetchval(f"{text} RETURNING id", *values))

    async def lock(self, keys: Sequence[str]) -> None:
        # Always in the same order (by id), so two transactions never wait for each other
        # crosswise; held until COMMIT or ROLLBACK.
        for key in sorted({lock_id(key) for key in keys}):
            await self._connection.execute("SELECT pg_advisory_xact_lock($1)", key)


class PostgresDatabase:
    """The bot's PostgreSQL database, shared by every repository through a connection pool.

    PostgreSQL handles concurrent writers itself, so there is no write lock here: each single
    write is its own transaction, and a charge serialises only with charges on the same member,
    server or day (`PostgresTransaction.lock`), in this process or any other. `open_storage`
    opens it once at start-up; it lives until the storage is closed.
    """

    lock_rows = " FOR UPDATE SKIP LOCKED"
    several_processes = True  # cluster mode: jobs are shared through leases (`bot.leases`)

    def __init__(
        self, pool: asyncpg.Pool, target: PostgresTarget, clock: Callable[[], float]
    ) -> None:
        self._pool = pool
        self._target = target
        self.clock = clock
        self._owner: asyncpg.Connection | None = None  # holds PROCESS_LOCK when exclusive

    @classmethod
    async def open(
        cls,
        target: PostgresTarget,
        *,
        clock: Callable[[], float] = time.time,
        migrations: Sequence[Migration] = MIGRATIONS,
        exclusive: bool = False,
        pool_size: int = 10,
    ) -> PostgresDatabase:
        """Connect and migrate. `exclusive`: refuse (`DatabaseInUse`) while another bot process
        uses the database, and hold it until `close`. Raises `DatabaseTooNew`, or
        `DatabaseUnavailable` when the server cannot be reached or refuses us."""
        try:
            pool = await asyncpg.create_pool(target.url, min_size=1, max_size=pool_size)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise DatabaseUnavailable(f"{target.safe} cannot be used: {error}") from None
        database = cls(pool, target, clock)
        try:
            if exclusive:
                await database._claim()
            await database._migrate(migrations)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            await database.close()
            # Say, a user who may not create tables: one sentence, not a traceback.
            raise DatabaseUnavailable(f"{target.safe} cannot be used: {error}") from None
        except BaseException:
            await database.close()
            raise
        return database

    async def _claim(self) -> None:
        # A session lock on a connection of its own, kept open: the server releases it when
        # that connection ends. After a `kill -9` that is at once (the socket closes), though
        # the server may notice a moment after our successor asks: it asks again for a few
        # seconds. A machine that vanished sends nothing: keepalives find it within ~30 s.
        owner = await asyncpg.connect(self._target.url, server_settings=_KEEPALIVES)
        deadline = time.monotonic() + CLAIM_WAIT
        while not await owner.fetchval("SELECT pg_try_advisory_lock($1)", PROCESS_LOCK):
            if time.monotonic() >= deadline:
                await owner.close()
                raise DatabaseInUse(self._target.safe)
            await asyncio.sleep(0.1)
        self._owner = owner

    async def close(self) -> None:
        if self._owner is not None:
            await self._owner.close()
            self._owner = None
        await self._pool.close()

    async def optimize(self, *, starting: bool = False) -> None:
        """Nothing to do: PostgreSQL's autovacuum keeps the planner's statistics current."""

    async def writable(self) -> bool:
        """Whether the server answers and would take a write (not a read-only standby)."""
        try:
            rows = await self.rows(
                "SELECT NOT pg_is_in_recovery()"
                " AND current_setting('transaction_read_only') = 'off'"
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return bool(rows[0][0])

    async def schema_version(self) -> int:
        rows = await self.rows(
            "SELECT max(version) FROM schema_migrations"
            " WHERE to_regclass('schema_migrations') IS NOT NULL"
        )
        return int(rows[0][0] or 0)

    async def rows(self, sql: str, params: Params = ()) -> list[asyncpg.Record]:
        text, values = dialect.statement(sql, params)
        connection = _current.get()
        if connection is not None:
            return list(await connection.fetch(text, *values))
        return list(await self._pool.fetch(text, *values))

    def writers_waiting(self) -> bool:
        """Never: writes here run on connections of their own, waiting only for the rows
        (or advisory keys) they touch."""
        return False

    async def lookup(self, sql: str, params: Params = ()) -> list[asyncpg.Record]:
        """A read like any other: asyncpg is asynchronous throughout (no thread to skip)."""
        return await self.rows(sql, params)

    async def _status(self, sql: str, params: Params) -> str:
        text, values = dialect.statement(sql, params)
        connection = _current.get()
        if connection is not None:
            return str(await connection.execute(text, *values))
        return str(await self._pool.execute(text, *values))

    async def execute(self, sql: str, params: Params = ()) -> None:
        await self._status(sql, params)

    async def changed(self, sql: str, params: Params = ()) -> bool:
        return _count(await self._status(sql, params)) == 1

    async def changed_count(self, sql: str, params: Params = ()) -> int:
        return _count(await self._status(sql, params))

    async def copy_records(
        self, table: str, columns: Sequence[str], records: Sequence[tuple[object, ...]]
    ) -> None:
        """Append `records` to `table` through COPY (the bulk load of a move from SQLite), on
        the transaction the running task is inside. COPY writes identity columns as given."""
        connection = _current.get()
        if connection is None:
            raise RuntimeError("copy_records runs inside a transaction")
        await connection.copy_records_to_table(table, records=records, columns=list(columns))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """One READ COMMITTED transaction on a connection of its own: each statement sees
        every commit made before it, which is what a charge needs after taking its locks."""
        async with self._pool.acquire() as connection, connection.transaction():
            inside = _current.set(connection)
            try:
                yield PostgresTransaction(connection)
            finally:
                _current.reset(inside)

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        """Bring the schema up to date, once: processes starting together queue on an advisory
        lock, and each finds the versions the first one applied. Each migration runs whole or
        not at all, with its row in `schema_migrations`."""
        async with self._pool.acquire() as connection:
            await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await connection.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations"
                    " (version BIGINT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                )
                current = int(
                    await connection.fetchval(
                        "SELECT COALESCE(max(version), 0) FROM schema_migrations"
                    )
                )
                if current > len(migrations):
                    raise DatabaseTooNew(self._target.safe, current, len(migrations))
                for sql in dialect.SETUP:
                    await connection.execute(sql)
                for version in range(current + 1, len(migrations) + 1):
                    async with connection.transaction():
                        for sql in dialect.migration(version, migrations[version - 1]):
                            await connection.execute(sql)
                        await connection.execute(
                            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                            version,
                            self.clock(),
                        )
                    if current:
                        log.info("database migrated to schema version %d", version)
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
