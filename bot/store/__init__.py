"""Everything the bot keeps: the database, its migrations and all the SQL over it.

The core types against the Protocols in `bot.store.interfaces`; `open_storage` is the one place
that picks the backend: SQLite at a file path, or PostgreSQL at a `PostgresTarget`
(DATABASE_URL). The repositories are the same over both (`bot.store.sql`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bot.store.database import Database
from bot.store.departures import SqlDepartedServers
from bot.store.interfaces import (
    Backend,
    BanList,
    DatabaseInUse,
    DepartedServers,
    JobLeases,
    JobLedger,
    KeyValues,
    MemberSettings,
    ModerationRecords,
    OperatorRecords,
    RateTaken,
    RateWindows,
    ReferenceTrays,
    RunSlots,
    ServerSettings,
    Storage,
    WakeChannel,
)
from bot.store.jobs import SqlJobLedger
from bot.store.leases import SqlJobLeases
from bot.store.member_defaults import SqlMemberSettings
from bot.store.meta import SqlKeyValues
from bot.store.migrations import DatabaseTooNew
from bot.store.moderation import SqlModerationRecords
from bot.store.operator import SqlOperatorRecords
from bot.store.postgres import (
    DatabaseUnavailable,
    PostgresDatabase,
    PostgresTarget,
)
from bot.store.postgres.wakeups import PostgresWakeups
from bot.store.rate_windows import SqlRateWindows
from bot.store.run_slots import SqlRunSlots
from bot.store.server_keys import SqlServerKeys
from bot.store.server_settings import SqlServerSettings
from bot.store.sql import SqlDatabase
from bot.store.tray import SqlReferenceTrays

__all__ = [
    "BanList",
    "DatabaseInUse",
    "DatabaseTarget",
    "DatabaseTooNew",
    "DatabaseUnavailable",
    "DepartedServers",
    "JobLeases",
    "JobLedger",
    "KeyValues",
    "MemberSettings",
    "ModerationRecords",
    "OperatorRecords",
    "PostgresTarget",
    "RateTaken",
    "RateWindows",
    "ReferenceTrays",
    "RunSlots",
    "ServerSettings",
    "Storage",
    "WakeChannel",
    "open_storage",
]


# Where the bot keeps everything: a SQLite file, or a PostgreSQL database.
DatabaseTarget = Path | PostgresTarget


async def open_storage(
    target: DatabaseTarget, clock: Callable[[], float] = time.time, *, exclusive: bool = False
) -> Storage:
    """Open the database at `target` (creating and migrating it as needed) and build one
    repository per table family over it. `exclusive`: on PostgreSQL, refuse with
    `DatabaseInUse` while another exclusive user holds the database (the bot does not ask:
    several bot processes share PostgreSQL, each job leased to one, `bot.leases`; on SQLite
    the bot holds a lock file instead, `bot.single`).

    Raises `DatabaseTooNew` when a newer bot last migrated it; `OSError` or `sqlite3.Error` when
    a SQLite file cannot be opened, `DatabaseUnavailable` when PostgreSQL cannot be used.
    """
    database: SqlDatabase
    backend: Backend
    wakeups: WakeChannel | None = None
    rate_windows: RateWindows | None = None
    if isinstance(target, PostgresTarget):
        database = backend = postgres = await PostgresDatabase.open(
            target, clock=clock, exclusive=exclusive
        )
        wakeups = PostgresWakeups(postgres, target)
        rate_windows = SqlRateWindows(postgres)
    else:
        database = backend = sqlite = await Database.open(target, clock=clock)
        try:
            await sqlite.optimize(starting=True)
        except BaseException:
            await sqlite.close()
            raise
    return Storage(
        jobs=SqlJobLedger(database),
        settings=SqlServerSettings(database),
        moderation=SqlModerationRecords(database),
        operator=SqlOperatorRecords(database),
        meta=SqlKeyValues(database),
        trays=SqlReferenceTrays(database),
        members=SqlMemberSettings(database, clock),
        departures=SqlDepartedServers(database),
        server_keys=SqlServerKeys(database),
        leases=SqlJobLeases(database),
        run_slots=SqlRunSlots(database),
        backend=backend,
        wakeups=wakeups,
        rate_windows=rate_windows,
    )
