"""Servers the bot left, in SQL: the `departed_servers` table, and removing what the bot
kept for such a server (every table that has it; the ledger's totals stay).

Members' personal data goes at once: finished jobs are blanked as `/history forget` blanks them,
and lose their interaction and callback tokens too; reference trays and member defaults are
deleted. The server's configuration (settings, role quotas, channels, blocked terms, bans, the
moderation log, its own sealed kie.ai key) goes after the grace period. Kept: every job's units,
day, state, member and server (quotas, budgets, `/server stats` and the operator's spend reports
read the same), the quota adjustments (the ledger's), the refusal counts (figures only), and the
operator's own records of the server (its cap, a ban of it).
"""

from __future__ import annotations

import asyncio

from bot.domain import Departure
from bot.store.jobs import _FINISHED_SQL, _FORGET
from bot.store.sql import SqlDatabase

# A server's configuration, table by table, in the order it is removed.
_CONFIGURATION = (
    ("settings", "guild_settings"),
    ("role quotas", "role_quotas"),
    ("channels", "allowed_channels"),
    ("blocked terms", "blocked_terms"),
    ("bans", "bans"),
    ("moderation log entries", "moderation_log"),
    ("kie.ai keys", "server_kie_keys"),  # the server's own key, sealed: not kept once it left
    ("retired kie.ai keys", "retired_kie_keys"),  # its earlier keys, if its jobs kept any
)
# The distinct servers of a table, one index seek per server (the SELECT DISTINCT would read a
# million index entries of `jobs`): each step asks for the next id above the last.
_SKIP_SCAN = """
    WITH RECURSIVE servers (id) AS (
        SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > 0)
        UNION ALL
        SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > servers.id)
        FROM servers WHERE servers.id IS NOT NULL
    )
    SELECT id FROM servers WHERE id IS NOT NULL"""
# Every table that holds something of a server, by the column naming it (0 or NULL: DMs).
_SERVER_COLUMNS = (
    ("jobs", "guild_id"),
    ("reference_tray", "guild_key"),
    ("member_defaults", "guild_key"),
    *((table, "guild_id") for _, table in _CONFIGURATION),
)


class SqlDepartedServers:
    """The `DepartedServers` over SQL. `ServerDepartures` records departures and returns
    through it and runs the purges; built by `open_storage`, lives as long as the database."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def record_departure(self, guild_id: int, at: float) -> bool:
        """True when this is news (a departure already recorded keeps its first date)."""
        return await self._db.changed(
            "INSERT INTO departed_servers (guild_id, left_at) VALUES (?, ?)"
            " ON CONFLICT (guild_id) DO NOTHING",
            (guild_id, at),
        )

    async def clear_departure(self, guild_id: int) -> bool:
        """The bot is back in the server: True when it had been recorded as gone."""
        return await self._db.changed(
            "DELETE FROM departed_servers WHERE guild_id = ?", (guild_id,)
        )

    async def departures(self) -> list[Departure]:
        rows = await self._db.rows(
            "SELECT guild_id, left_at, purged_at FROM departed_servers ORDER BY left_at"
        )
        return [Departure(row["guild_id"], row["left_at"], row["purged_at"]) for row in rows]

    async def servers_with_data(self) -> set[int]:
        """Every server something is kept for (jobs included, even blanked ones)."""
        found: set[int] = set()
        for table, column in _SERVER_COLUMNS:
            rows = await self._db.rows(_SKIP_SCAN.format(table=table, column=column))
            found.update(int(row["id"]) for row in rows)
        return found

    async def purge_personal(self, guild_id: int, batch: int = 5000) -> dict[str, int]:
        """Blank the server's finished jobs (open ones finish first, by the usual rules, and
        are blanked by a later pass) and delete its trays and member defaults: how many of
        each. The jobs a batch per statement, as `expire_history` does."""
        jobs = 0
        while True:
            changed = await self._db.changed_count(
                f"""UPDATE jobs SET {_FORGET}, interaction_token = NULL, callback_token = NULL
                    WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_guild_day_spend
                                 WHERE guild_id = :guild AND state IN {_FINISHED_SQL}
                                   AND (forgotten_at IS NULL OR interaction_token IS NOT NULL
                                        OR callback_token IS NOT NULL)
                                 LIMIT :batch)""",
                {"guild": guild_id, "batch": batch, "now": self._db.clock()},
            )
            jobs += changed
            if changed < batch:
                break
            await asyncio.sleep(0)  # let the charges waiting for the lock go first
        trays = await self._db.changed_count(
            "DELETE FROM reference_tray WHERE guild_key = ?", (guild_id,)
        )
        defaults = await self._db.changed_count(
            "DELETE FROM member_defaults WHERE guild_key = ?", (guild_id,)
        )
        return {"jobs blanked": jobs, "tray images": trays, "member defaults": defaults}

    async def purge_configuration(self, guild_id: int, at: float) -> dict[str, int] | None:
        """Delete the server's configuration and mark its departure purged, in one
        transaction; how many rows of each. None when the server is no longer recorded as
        departed (the bot came back meanwhile): nothing is deleted then."""
        counts: dict[str, int] = {}
        async with self._db.transaction() as db:
            # The UPDATE holds the row (PostgreSQL) or the database (SQLite) until COMMIT, so a
            # return recorded meanwhile either comes first (nothing is deleted) or waits.
            await db.execute(
                "UPDATE departed_servers SET purged_at = ?"
                " WHERE guild_id = ? AND purged_at IS NULL",
                (at, guild_id),
            )
            marked = await self._db.rows(
                "SELECT purged_at FROM departed_servers WHERE guild_id = ?", (guild_id,)
            )
            if not marked or marked[0]["purged_at"] != at:
                return None
            for name, table in _CONFIGURATION:
                found = await self._db.rows(
                    f"SELECT COUNT(*) AS n FROM {table} WHERE guild_id = ?", (guild_id,)
                )
                counts[name] = int(found[0]["n"])
                await db.execute(f"DELETE FROM {table} WHERE guild_id = ?", (guild_id,))
        return counts
