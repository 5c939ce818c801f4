"""Fair use: how many jobs may run at once per member and per server, and the line for the rest.

A job "runs" from the moment it leaves this line until it is delivered or refunded; kie.ai's
own submission limit is a separate, later line (`bot.kie.ratelimit`). Waiting jobs are admitted
first in, first out, except that a job held back only by its own member's limit lets the jobs
behind it pass: one member's backlog never blocks everybody else.

Positions are counted per server (in direct messages, per member) and every waiting job is told
when its position changes.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunLimits:
    """None means no limit."""

    per_member: int | None
    per_server: int | None


class HeldBy(enum.StrEnum):
    MEMBER_LIMIT = "member"  # the member already has as many jobs running as allowed
    SERVER_LIMIT = "server"  # the server already has as many jobs running as allowed


@dataclass(frozen=True)
class Wait:
    position: int  # 1 = next in this server's line
    held_by: HeldBy
    limit: int  # the limit that holds the job back


_Member = tuple[int | None, int]  # (guild id, user id)


@dataclass(eq=False)
class _Waiter:
    job_id: int
    member: _Member
    line: tuple[int | None, int | None]  # the server, or the member in direct messages
    limits: RunLimits
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    admitted: bool = False
    wait: Wait | None = None


class RunQueue:
    """The fair-use line: which charged jobs may run now and where the others wait.

    One per process, created at start-up and shared by every job. `JobService` calls `enter`
    for each charged job before submitting it and `leave` when the job ends (delivered or
    refunded); it knows nothing of kie.ai's own rate limit, which is the next line. Limits come
    per job (`RunLimits`) so a server's change applies to the jobs that arrive after it.
    """

    def __init__(self) -> None:
        self._running: dict[int, _Member] = {}  # job id -> member
        self._per_member: collections.Counter[_Member] = collections.Counter()
        self._per_server: collections.Counter[int] = collections.Counter()
        self._waiting: list[_Waiter] = []

    def running(self, guild_id: int | None = None) -> int:
        if guild_id is None:
            return len(self._running)
        return self._per_server[guild_id]

    def waiting(self) -> int:
        return len(self._waiting)

    async def enter(
        self,
        job_id: int,
        user_id: int,
        guild_id: int | None,
        limits: RunLimits,
        on_wait: Callable[[Wait], Awaitable[None]],
    ) -> None:
        """Return once the job may run; until then `on_wait` hears each new position.

        The caller must `leave(job_id)` when the job is over, whether or not it ran.
        """
        line = (guild_id, None) if guild_id is not None else (None, user_id)
        waiter = _Waiter(job_id, (guild_id, user_id), line, limits)
        self._waiting.append(waiter)
        self._admit()
        reported: Wait | None = None
        try:
            while not waiter.admitted:
                if waiter.wait is not None and waiter.wait != reported:
                    reported = waiter.wait
                    await on_wait(reported)
                    continue
                await waiter.changed.wait()
                waiter.changed.clear()
        finally:
            if not waiter.admitted:  # cancelled while waiting
                self._waiting.remove(waiter)
                self._admit()

    def set_limits(self, guild_id: int, limits: RunLimits) -> None:
        """A server changed its limits: waiting jobs follow the new ones at once."""
        for waiter in self._waiting:
            if waiter.member[0] == guild_id:
                waiter.limits = limits
        self._admit()

    def occupy(self, job_id: int, user_id: int, guild_id: int | None) -> None:
        """Count a job that is already at kie.ai (resumed after a restart) as running."""
        self._start(job_id, (guild_id, user_id))

    def leave(self, job_id: int) -> None:
        member = self._running.pop(job_id, None)
        if member is None:
            return
        self._per_member[member] -= 1
        if member[0] is not None:
            self._per_server[member[0]] -= 1
        self._admit()

    def _start(self, job_id: int, member: _Member) -> None:
        if job_id in self._running:
            return
        self._running[job_id] = member
        self._per_member[member] += 1
        if member[0] is not None:
            self._per_server[member[0]] += 1

    def _holder(self, waiter: _Waiter) -> Wait | None:
        """What keeps a waiting job from running now, if anything (position filled in later)."""
        limits = waiter.limits
        if limits.per_member is not None and self._per_member[waiter.member] >= limits.per_member:
            return Wait(0, HeldBy.MEMBER_LIMIT, limits.per_member)
        guild_id = waiter.member[0]
        if (
            guild_id is not None
            and limits.per_server is not None
            and self._per_server[guild_id] >= limits.per_server
        ):
            return Wait(0, HeldBy.SERVER_LIMIT, limits.per_server)
        return None

    def _admit(self) -> None:
        still_waiting: list[_Waiter] = []
        positions: collections.Counter[tuple[int | None, int | None]] = collections.Counter()
        for waiter in self._waiting:
            holder = self._holder(waiter)
            if holder is None:
                self._start(waiter.job_id, waiter.member)
                waiter.admitted = True
                waiter.changed.set()
                continue
            still_waiting.append(waiter)
            positions[waiter.line] += 1
            wait = Wait(positions[waiter.line], holder.held_by, holder.limit)
            if wait != waiter.wait:
                waiter.wait = wait
                waiter.changed.set()
        self._waiting = still_waiting
