"""The PostgreSQL backend (DATABASE_URL): the same repositories and migrations as SQLite's, run
through asyncpg with the SQL translated (`dialect`)."""

from bot.store.postgres.database import (
    DatabaseUnavailable,
    PostgresDatabase,
    PostgresTarget,
)

__all__ = ["DatabaseUnavailable", "PostgresDatabase", "PostgresTarget"]
