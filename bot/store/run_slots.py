"""Global running slots in SQL (cluster mode): which open jobs count as running against their
member's and server's limits in every process (the `jobs` table's `run_slot` and
`run_wanted`)."""

from __future__ import annotations

from typing import Literal

from bot.store.leases import OPEN_SQL
from bot.store.sql import SqlDatabase

SlotRefusal = Literal["member", "server"]

# A slot counts only while its job is open and leased by a live process: a killed process's
# slots free themselves when its leases run out, with nothing to clean up.
_LIVE_SQL = f"{OPEN_SQL} AND lease_until >= :now"


class SqlRunSlots:
    """The `RunSlots` over SQL. A take is one transaction under advisory locks on the member and
    the server (PostgreSQL; SQLite's one writer needs none), so two processes never both take
    the last slot. Built by `open_storage`; lives as long as the database."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def take_slot(
        self,
        job_id: int,
        user_id: int,
        guild_id: int | None,
        per_member: int | None,
        per_server: int | None,
        wanted_fresh: float,
    ) -> SlotRefusal | None:
        """Mark the job running if its member and its server have room across every process;
        otherwise which limit is full. A job older than this one that lately found the server
        full (`run_wanted` within `wanted_fresh` seconds) goes first: its process asks again
        within a second, so a process whose own jobs end never keeps the slots to itself."""
        now = self._db.clock()
        params: dict[str, object] = {
            "id": job_id,
            "user": user_id,
            "guild": guild_id,
            "now": now,
        }
        # Plain equality (or IS NULL in direct messages), so PostgreSQL's planner uses the
        # partial index rather than a null-safe OR.
        where_guild = "guild_id IS NULL" if guild_id is None else "guild_id = :guild"
        keys = [f"run-member:{guild_id}:{user_id}"]
        if guild_id is not None:
            keys.append(f"run-server:{guild_id}")
        async with self._db.transaction() as transaction:
            await transaction.lock(keys)
            if per_member is not None:
                rows = await self._db.rows(
                    f"SELECT COUNT(*) FROM jobs WHERE run_slot = 1 AND {where_guild}"
                    f" AND user_id = :user AND id <> :id AND {_LIVE_SQL}",
                    params,
                )
                if int(rows[0][0]) >= per_member:
                    return "member"
            if guild_id is not None and per_server is not None:
                rows = await self._db.rows(
                    "SELECT COUNT(*) FROM jobs WHERE run_slot = 1 AND guild_id = :guild"
                    f" AND id <> :id AND {_LIVE_SQL}",
                    params,
                )
                full = int(rows[0][0]) >= per_server
                if not full:
                    older = await self._db.rows(
                        "SELECT 1 FROM jobs WHERE run_wanted >= :fresh AND guild_id = :guild"
                        f" AND id < :id AND run_slot = 0 AND {_LIVE_SQL} LIMIT 1",
                        {**params, "fresh": now - wanted_fresh},
                    )
                    full = bool(older)
                if full:
                    await transaction.execute(
                        "UPDATE jobs SET run_wanted = ? WHERE id = ?", (now, job_id)
                    )
                    return "server"
            await transaction.execute(
                "UPDATE jobs SET run_slot = 1, run_wanted = NULL WHERE id = ?", (job_id,)
            )
        return None

    async def occupy_slot(self, job_id: int) -> None:
        """Count a job already at kie.ai (taken over, or resumed) as running, whatever the
        limits say: it runs."""
        await self._db.execute(
            "UPDATE jobs SET run_slot = 1, run_wanted = NULL WHERE id = ? AND run_slot = 0",
            (job_id,),
        )

    async def release_slot(self, job_id: int, owner: str) -> None:
        """The job left the running set (or the line) of `owner`'s process: it counts no more.
        Not when another process has taken the job over meanwhile (this one stalled past its
        lease): the slot is that one's now."""
        await self._db.execute(
            "UPDATE jobs SET run_slot = 0, run_wanted = NULL"
            " WHERE id = ? AND (run_slot = 1 OR run_wanted IS NOT NULL)"
            " AND (lease_owner = ? OR lease_owner IS NULL)",
            (job_id, owner),
        )

    async def running_slots(self, guild_id: int | None, user_id: int | None = None) -> int:
        """How many of a server's (or one member's there) jobs hold a live slot now (for
        status and tests)."""
        params = {"guild": guild_id, "user": user_id, "now": self._db.clock()}
        where_guild = "guild_id IS NULL" if guild_id is None else "guild_id = :guild"
        member = " AND user_id = :user" if user_id is not None else ""
        rows = await self._db.rows(
            f"SELECT COUNT(*) FROM jobs WHERE run_slot = 1 AND {where_guild}{member}"
            f" AND {_LIVE_SQL}",
            params,
        )
        return int(rows[0][0])
