"""Everything the bot keeps: the database, its migrations and the SQL over it."""

from bot.store.database import Store

__all__ = ["Store"]
