"""Everything the bot keeps: the database, its migrations and all the SQL over it.

The core types against the Protocols in `bot.store.interfaces`; `open_storage` is the one place
that knows the backend is SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bot.store.database import Database
from bot.store.departures import SqliteDepartedServers
from bot.store.interfaces import (
    BanList,
    DepartedServers,
    JobLedger,
    KeyValues,
    MemberSettings,
    ModerationRecords,
    OperatorRecords,
    ReferenceTrays,
    ServerSettings,
    Storage,
)
from bot.store.jobs import SqliteJobLedger
from bot.store.member_defaults import SqliteMemberSettings
from bot.store.meta import SqliteKeyValues
from bot.store.migrations import DatabaseTooNew
from bot.store.moderation import SqliteModerationRecords
from bot.store.operator import SqliteOperatorRecords
from bot.store.server_settings import SqliteServerSettings
from bot.store.tray import SqliteReferenceTrays

__all__ = [
    "BanList",
    "DatabaseTooNew",
    "DepartedServers",
    "JobLedger",
    "KeyValues",
    "MemberSettings",
    "ModerationRecords",
    "OperatorRecords",
    "ReferenceTrays",
    "ServerSettings",
    "Storage",
    "open_storage",
]


async def open_storage(path: Path, clock: Callable[[], float] = time.time) -> Storage:
    """Open the SQLite database at `path` (creating and migrating it as needed) and build one
    repository per table family over it.

    Raises `DatabaseTooNew` when a newer bot last migrated it, `OSError` or `sqlite3.Error`
    when it cannot be opened.
    """
    database = await Database.open(path, clock=clock)
    try:
        await database.optimize(starting=True)
    except BaseException:
        await database.close()
        raise
    return Storage(
        jobs=SqliteJobLedger(database),
        settings=SqliteServerSettings(database),
        moderation=SqliteModerationRecords(database),
        operator=SqliteOperatorRecords(database),
        meta=SqliteKeyValues(database),
        trays=SqliteReferenceTrays(database),
        members=SqliteMemberSettings(database, clock),
        departures=SqliteDepartedServers(database),
        backend=database,
    )
