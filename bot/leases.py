"""Job leases: several bot processes sharing one database (PostgreSQL) run each job once.

A process claims a job before running it (`lease_owner` = this process's id, `lease_until` =
now + LEASE_SECONDS), renews its leases every third of that while it runs, and releases them
when a job ends or the process stops. A process killed with `kill -9` renews nothing: once its
leases run out, the other processes take its jobs over and run them from the state the database
kept, as a restart would (the state machine's conditional transitions still keep a job from
being submitted, delivered or refunded twice). On SQLite there is one process, which runs
every open job: no lease is kept there (the composition root builds none).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.store import JobLeases

LEASE_SECONDS = 30.0
TAKE_OVER_AT_ONCE = 100  # jobs one takeover round leases at most (the rest wait a round)


def process_id() -> str:
    """This process's lease owner: host, pid and a random part (pids repeat across restarts
    and containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Leases:
    """This process's leases on jobs. One per process sharing a database, built by the
    composition root and used by `JobRunner`."""

    store: JobLeases
    seconds: float = LEASE_SECONDS
    owner: str = field(default_factory=process_id)
    clock: Callable[[], float] = time.time

    @property
    def every(self) -> float:
        """How often leases are renewed and expired ones looked for."""
        return self.seconds / 3

    def _until(self) -> float:
        return self.clock() + self.seconds

    async def claim(self, job_id: int) -> bool:
        """Lease a job to run it; False when another live process holds it."""
        return await self.store.claim(job_id, self.owner, self._until(), self.seconds)

    async def renew(self) -> int:
        return await self.store.renew(self.owner, self._until())

    async def take_expired(self, *, starting: bool = False) -> list[int]:
        """Lease the jobs whose process died; their ids. At start, also every job nobody has
        claimed yet (left by a process that died between charging and claiming it; were its
        charger alive after all, its claim fails and it leaves the job to us: still once)."""
        grace = 0.0 if starting else self.seconds
        return await self.store.take_expired(self.owner, self._until(), grace, TAKE_OVER_AT_ONCE)

    async def release(self, job_id: int) -> None:
        await self.store.release(job_id, self.owner)

    async def release_mine(self) -> int:
        """On a clean stop: another process may take this one's open jobs at once."""
        return await self.store.release_all(self.owner)
