"""Running limits that hold across processes (cluster mode, on PostgreSQL).

Each process keeps its own fair line (`bot.runqueue`); when several share the database, a job
that its local line lets in must also take a running slot in the database before it goes to
kie.ai: one transaction under advisory locks on its member and its server counts their jobs
marked running by any live process (`run_slot`, counted only while the job's lease is live, so
a killed process's slots free themselves within LEASE_SECONDS, and a takeover keeps the slot of
a job already at kie.ai). Refused, the job stays in its local line at its place and asks again
when one of this process's jobs ends (right after its slot is released) and, while any job is
held so, every `RETRY_SECONDS` (a slot freed by another process is seen within that).

Across processes the server's line is first come, first served by job id: a job refused because
its server was full marks itself as wanting a slot, and a younger job of that server, in any
process, is refused while the mark is fresh, so a process whose own jobs keep ending never
keeps the freed slots to itself. Within a process the line stays as fair as it was.

On SQLite there is one process: none of this exists there, and admission costs no database
round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.store import RunSlots

# How often jobs held by another process's running jobs ask again.
RETRY_SECONDS = 1.0
# How long a job's "I want the server's next slot" mark holds younger jobs back: a few retries,
# so a job that stopped asking (cancelled, or let in) never blocks the line for long.
WANTED_FRESH_SECONDS = 3 * RETRY_SECONDS


@dataclass
class SharedSlots:
    """The database's running slots, as the local line uses them. One per process, built by the
    composition root when the database is shared."""

    store: RunSlots
    owner: str  # this process's lease owner (`bot.leases`)
    retry_seconds: float = RETRY_SECONDS
    wanted_fresh: float = field(default=WANTED_FRESH_SECONDS)

    async def take(
        self,
        job_id: int,
        user_id: int,
        guild_id: int | None,
        per_member: int | None,
        per_server: int | None,
    ) -> str | None:
        """None once the job holds a slot; otherwise "member" or "server": which limit is
        full across the processes."""
        return await self.store.take_slot(
            job_id, user_id, guild_id, per_member, per_server, self.wanted_fresh
        )

    async def occupy(self, job_id: int) -> None:
        await self.store.occupy_slot(job_id)

    async def release(self, job_id: int) -> None:
        await self.store.release_slot(job_id, self.owner)
