"""The PostgreSQL backend (DATABASE_URL): the same repositories and migrations as SQLite's, run
through asyncpg with the SQL translated (`dialect`)."""

from bot.store.postgres.database import (
    DatabaseInUse,
    DatabaseUnavailable,
    PostgresDatabase,
    PostgresTarget,
)

__all__ = ["DatabaseInUse", "DatabaseUnavailable", "PostgresDatabase", "PostgresTarget"]
