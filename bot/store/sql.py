"""What the repositories ask of a database, whichever backend it is.

The repositories in this package write their SQL once, in SQLite's dialect with `?` and `:name`
parameters; `SqliteDatabase` runs it as written and `PostgresDatabase` translates it
(`bot.store.postgres.dialect`). Rows are read by column name (or position), which both
`sqlite3.Row` and asyncpg's `Record` do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

Params = Sequence[object] | Mapping[str, object]


class Row(Protocol):
    """One result row: `row["column"]` or `row[0]`."""

    def __getitem__(self, key: Any, /) -> Any: ...


class Transaction(Protocol):
    """Statements inside one transaction (reads through `SqlDatabase.rows` join it too)."""

    async def execute(self, sql: str, params: Params = ()) -> None: ...

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run one INSERT into a table with an `id` column; the new row's id."""
        ...

    async def lock(self, keys: Sequence[str]) -> None:
        """Serialise this transaction, until it ends, with every other one (in any process)
        that locks one of `keys`: what a charge reads then stays true until its COMMIT."""
        ...


class SqlDatabase(Protocol):
    """One database the repositories share: reads, single writes and transactions."""

    clock: Callable[[], float]
    # Appended to a SELECT inside a transaction: lock the rows it reads and skip those another
    # transaction holds (PostgreSQL's FOR UPDATE SKIP LOCKED; empty on SQLite, whose one
    # writer at a time already keeps others out).
    lock_rows: str
    several_processes: bool  # whether other bot processes may share this database

    async def rows(self, sql: str, params: Params = ()) -> Sequence[Row]: ...
    # A read of a few rows through an index (a member's defaults, their tray): the hot path's
    # reads, which SQLite answers on the event loop's own thread (see `Database.lookup`).
    async def lookup(self, sql: str, params: Params = ()) -> Sequence[Row]: ...
    # Whether a write waits for one under way (SQLite's single writing connection); a long
    # transaction may end early for it.
    def writers_waiting(self) -> bool: ...
    async def execute(self, sql: str, params: Params = ()) -> None: ...
    async def changed(self, sql: str, params: Params = ()) -> bool: ...
    async def changed_count(self, sql: str, params: Params = ()) -> int: ...
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...
