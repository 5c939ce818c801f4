"""Fair use: how many jobs may run at once per member and per server, and the line for the rest.

A job "runs" from the moment it leaves this line until it is delivered or refunded; kie.ai's
own submission limit is a separate, later line (`bot.kie.ratelimit`). Waiting jobs are admitted
first in, first out, except that a job held back only by its own member's limit lets the jobs
behind it pass: one member's backlog never blocks everybody else.

Lines are counted per server (in direct messages, per member). Nothing here walks a whole line:
- each line keeps a heap of its members by their oldest waiting job, holding only the members
  under their own limit (the others are parked until one of their jobs ends), so letting the
  next job in costs O(log n);
- a Fenwick tree over arrival numbers gives any job's position in O(log n), on demand;
- a waiting job is an entry, not a task: it is looked at again (`_review`) only when the line
  has moved by half its position or its expected start has come, so one departure wakes O(1)
  waiters on average, not every one, and thousands waiting cost the event loop nothing.

When several processes share the database (`share`), a job the line lets in also takes a
running slot there (`bot.runslots`) before it runs; refused, it goes back to its place, held
until a slot may have freed (a task asks, only while it asks). Without that (SQLite, one
process), nothing here awaits anything.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bot.runslots import SharedSlots

log = logging.getLogger(__name__)

# Until a job has run, how long one is assumed to take from leaving the line to its end.
DEFAULT_RUN_SECONDS = 30.0
# Weight of the newest run in the learned run time (an exponentially weighted mean).
RUN_SECONDS_WEIGHT = 0.2
MIN_RUN_SECONDS = 1.0


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
    # Seconds until the job is expected to leave the line, learned from recent run times.
    # An estimate, so two waits at the same place compare equal whatever it says.
    eta_seconds: float = field(default=0.0, compare=False)


class Seat(Protocol):
    """A waiting job, as its line sees it (`RunQueue.join`)."""

    def waiting(self, wait: Wait) -> None:
        """Its place now (told at first, then when it may have changed much)."""

    def admitted(self) -> None:
        """It may run now (called once)."""


_Member = tuple[int | None, int]  # (guild id, user id)
_LineKey = tuple[int | None, int | None]  # the server, or the member in direct messages


class _Fenwick:
    """Counts of waiting jobs by arrival number: how many arrived before a given one."""

    def __init__(self, size: int = 64) -> None:
        self._tree = [0] * (size + 1)

    @property
    def size(self) -> int:
        return len(self._tree) - 1

    def add(self, index: int, delta: int) -> None:  # index from 1
        tree = self._tree
        while index < len(tree):
            tree[index] += delta
            index += index & -index

    def before(self, index: int) -> int:
        """How many are counted at indexes below `index`."""
        total, index = 0, index - 1
        tree = self._tree
        while index > 0:
            total += tree[index]
            index -= index & -index
        return total


@dataclass(eq=False)
class _Waiter:
    job_id: int
    member: _Member
    seq: int  # arrival number in its line, from 1
    line: _Line
    seat: Seat
    admitted: bool = False
    gone: bool = False  # left the line: admitted or cancelled
    told: bool = False  # its seat was told it may run, or it was withdrawn: nothing more
    reported: Wait | None = None  # the place last told
    mark: int = -1  # the departures count its entry in `line.sleepers` waits for (-1: none)
    due: float = math.inf  # when (loop time) its expected start comes, and it is told again
    woken: bool = False  # a review is scheduled
    # Shared database only: let in here and asking for a running slot there (out of its
    # member's queue meanwhile, still counted in the line); or refused one, and which limit
    # held it (back at its place, passed over until a slot may have freed).
    trying: bool = False
    held: HeldBy | None = None


@dataclass(eq=False)
class _Line:
    limits: RunLimits
    fenwick: _Fenwick = field(default_factory=_Fenwick)
    arrivals: int = 0  # the last arrival number given out
    waiting: int = 0
    departures: int = 0  # jobs that left this line (let in or cancelled), ever
    queues: dict[int, collections.deque[_Waiter]] = field(default_factory=dict)  # per user
    # Members under their own limit, by their oldest waiting job's arrival number. An entry is
    # current only while `listed[user]` holds the same number; others are skipped when popped.
    ready: list[tuple[int, int]] = field(default_factory=list)
    listed: dict[int, int] = field(default_factory=dict)
    # Waiters asleep until `departures` reaches a mark: (mark, arrival number, waiter).
    sleepers: list[tuple[int, int, _Waiter]] = field(default_factory=list)
    # Shared database only: waiters asking for a slot, those refused one, and whether the
    # server was full across the processes (nobody here asks again until a slot may be free).
    trying: set[_Waiter] = field(default_factory=set)
    held: list[_Waiter] = field(default_factory=list)
    server_held: bool = False


class RunQueue:
    """The fair-use line: which charged jobs may run now and where the others wait.

    One per process, created at start-up and shared by every job. `JobService` calls `join`
    for each charged job before submitting it and `leave` when the job ends (delivered,
    refunded or cancelled while waiting); it knows nothing of kie.ai's own rate limit, which
    is the next line. Limits come per job (`RunLimits`); a line follows the newest it was
    given, so a server's change applies to every job waiting there. With other processes on
    the database, the composition root calls `share`, and the limits count their running jobs
    too (`bot.runslots`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._running: dict[int, tuple[_Member, float]] = {}  # job id -> member, start time
        self._per_member: collections.Counter[_Member] = collections.Counter()
        self._per_server: collections.Counter[int] = collections.Counter()
        self._lines: dict[_LineKey, _Line] = {}
        self._waiting = 0
        self._run_seconds = DEFAULT_RUN_SECONDS
        self._closed = False
        self.wakeups = 0  # waiters woken because their line moved (for tests and benchmarks)
        # Shared database only (`share`): the global slots, the lines with jobs held by them,
        # the task that asks again for those, and each job's slot change in flight (one after
        # another per job, so a release never overtakes the take or occupy before it).
        self._slots: SharedSlots | None = None
        self._held_lines: set[_Line] = set()
        self._retrier: asyncio.Task[None] | None = None
        self._slot_changes: dict[int, asyncio.Task[None]] = {}
        # The jobs waiting in a line, by id; their shared-slot asks in flight; and when the
        # waiting jobs' expected starts come (loop time, a heap with stale entries skipped),
        # watched by one timer for them all.
        self._seats: dict[int, _Waiter] = {}
        self._asking: dict[int, asyncio.Task[None]] = {}
        self._dues: list[tuple[float, int, _Waiter]] = []
        self._due_order = itertools.count()
        self._due_timer: asyncio.Handle | None = None  # uvloop's call_at may give a Handle
        self._due_at = math.inf  # when it fires

    def share(self, slots: SharedSlots) -> None:
        """Other processes share the database: running limits count their jobs too."""
        self._slots = slots

    def running(self, guild_id: int | None = None) -> int:
        if guild_id is None:
            return len(self._running)
        return self._per_server[guild_id]

    def waiting(self) -> int:
        return self._waiting

    @property
    def run_seconds(self) -> float:
        """How long a job has lately taken from leaving the line to its end."""
        return self._run_seconds

    def recall(self, seconds: float) -> None:
        """Start from how long jobs took before this start (the previous run's, from the
        database) instead of DEFAULT_RUN_SECONDS, so a restart's first waiting members see an
        expected start learned from the bot's own history, not a guess."""
        self._run_seconds = max(MIN_RUN_SECONDS, seconds)

    def close(self) -> None:
        """Shutting down: nobody else is let in, and departures cost no more than bookkeeping.
        The waiting jobs stay where they are (open in the database, resumed at the next
        start); those asking for a shared slot stop asking and give back what they took."""
        self._closed = True
        if self._retrier is not None:
            self._retrier.cancel()
            self._retrier = None
        if self._due_timer is not None:
            self._due_timer.cancel()
            self._due_timer = None
        for job_id in list(self._asking):
            self.withdraw(job_id)

    async def settle(self, within: float) -> None:
        """Let the slot releases under way reach the database (at shutdown), for at most
        `within` seconds: a slot left behind frees itself once the lease is released."""
        pending = list(self._slot_changes.values())
        if not pending:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await asyncio.gather(*pending, return_exceptions=True)

    def join(
        self,
        job_id: int,
        user_id: int,
        guild_id: int | None,
        limits: RunLimits,
        seat: Seat,
    ) -> bool:
        """Put a charged job in its line. True when it may run at once; otherwise it waits as
        an entry, with no task of its own: its `seat` hears its place at first, and again when
        it may have changed much (after the line moved by half the position, or when the
        expected start has come), and is told once it may run. The seat decides what is worth
        showing.

        The caller must `leave(job_id)` when the job is over, whether or not it ran (a job
        cancelled while waiting leaves the line then).
        """
        key: _LineKey = (guild_id, None) if guild_id is not None else (None, user_id)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line(limits)
        line.limits = limits
        waiter = self._join(line, job_id, (guild_id, user_id), seat)
        self._seats[job_id] = waiter
        self._admit(line)
        if waiter.admitted:
            waiter.told = True
            del self._seats[job_id]
            return True
        self._review(waiter)
        return False

    def withdraw(self, job_id: int) -> None:
        """A waiting job leaves the line without running (cancelled, or the bot is stopping
        while it asks for a shared slot); nothing more is told about it."""
        waiter = self._seats.pop(job_id, None)
        if waiter is None:
            return
        waiter.told = True
        asking = self._asking.pop(job_id, None)
        if asking is not None:
            asking.cancel()
        line = waiter.line
        if waiter.trying:  # withdrawn while asking: the slot may have been taken
            waiter.trying = False
            line.trying.discard(waiter)
            self._stop(job_id)
            self._change_slot(job_id, "release")
        elif self._slots is not None and not waiter.admitted:
            self._change_slot(job_id, "release")  # its mark of wanting one (`bot.runslots`)
        if not waiter.admitted:
            self._drop(line, waiter)

    def _wake(self, waiter: _Waiter) -> None:
        """Look at a waiting job again soon (once, however many times it is woken meanwhile)."""
        if waiter.woken or waiter.told:
            return
        waiter.woken = True
        asyncio.get_running_loop().call_soon(self._review, waiter)

    def _review(self, waiter: _Waiter) -> None:
        """What a waiting job does when woken: go, if let in; ask for its shared slot, if let
        in here; else tell its place if it changed, and sleep until the line has moved by half
        of it or its expected start has come."""
        waiter.woken = False
        if waiter.told:
            return
        if waiter.admitted:
            waiter.told = True
            self._seats.pop(waiter.job_id, None)
            waiter.seat.admitted()
            return
        if waiter.gone or self._closed:
            return
        if waiter.trying:
            if waiter.job_id not in self._asking:
                self._asking[waiter.job_id] = asyncio.create_task(
                    self._ask(waiter), name=f"run-slot-ask-{waiter.job_id}"
                )
            return
        line = waiter.line
        wait = self._wait_of(line, waiter)
        if wait != waiter.reported:
            waiter.reported = wait
            waiter.seat.waiting(wait)
        mark = line.departures + max(1, (wait.position + 1) // 2)
        if mark != waiter.mark:
            waiter.mark = mark
            heapq.heappush(line.sleepers, (mark, waiter.seq, waiter))
        self._sleep_until(waiter, max(1.0, wait.eta_seconds))

    def _sleep_until(self, waiter: _Waiter, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        due = waiter.due = loop.time() + seconds
        heapq.heappush(self._dues, (due, next(self._due_order), waiter))
        if self._due_timer is None or due < self._due_at:
            if self._due_timer is not None:
                self._due_timer.cancel()
            self._due_at = due
            self._due_timer = loop.call_at(due, self._expected_starts)

    def _expected_starts(self) -> None:
        """The expected start of some waiting jobs came and went: they say so again."""
        self._due_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        dues = self._dues
        while dues and dues[0][0] <= now:
            due, _, waiter = heapq.heappop(dues)
            if due != waiter.due or waiter.told or waiter.gone:
                continue  # stale: looked at again since
            waiter.due = math.inf
            waiter.reported = None
            self._wake(waiter)
        if dues and not self._closed:
            self._due_at = dues[0][0]
            self._due_timer = loop.call_at(self._due_at, self._expected_starts)

    async def _ask(self, waiter: _Waiter) -> None:
        try:
            await self._ask_slot(waiter.line, waiter)
        finally:
            if self._asking.get(waiter.job_id) is asyncio.current_task():
                del self._asking[waiter.job_id]
        self._wake(waiter)

    async def _ask_slot(self, line: _Line, waiter: _Waiter) -> None:
        """Take the job's running slot across the processes; refused, it goes back to its
        place in the line, held until a slot may have freed."""
        assert self._slots is not None
        guild_id, user_id = waiter.member
        limits = line.limits
        try:
            refused = await self._slots.take(
                waiter.job_id, user_id, guild_id, limits.per_member, limits.per_server
            )
        except Exception:
            # The database is unreachable for a moment: held, as if full, and asked again.
            log.warning("job %s: could not take a running slot", waiter.job_id, exc_info=True)
            refused = HeldBy.MEMBER_LIMIT.value
        waiter.trying = False
        line.trying.discard(waiter)
        if refused is None:
            self._remove(line, waiter)
            waiter.admitted = True
            return
        self._stop(waiter.job_id)  # counted here only while it asked
        waiter.held = HeldBy(refused)
        line.held.append(waiter)
        if waiter.held is HeldBy.SERVER_LIMIT:
            line.server_held = True
        queue = line.queues.setdefault(user_id, collections.deque())
        # Back at its place: before the member's jobs that arrived after it.
        index = 0
        while index < len(queue) and queue[index].seq < waiter.seq:
            index += 1
        queue.insert(index, waiter)
        self._list(line, user_id, queue)
        self._hold(line)
        self._admit(line)  # its place among the running is free here: others may go

    def _hold(self, line: _Line) -> None:
        """The line has jobs held by the other processes' running jobs: ask again soon."""
        self._held_lines.add(line)
        if self._retrier is None and not self._closed:
            self._retrier = asyncio.create_task(self._retry_held(), name="run-slots-retry")

    async def _retry_held(self) -> None:
        assert self._slots is not None
        try:
            while self._held_lines and not self._closed:
                await asyncio.sleep(self._slots.retry_seconds)
                lines, self._held_lines = self._held_lines, set()
                for line in lines:
                    self._unhold(line)
        finally:
            if self._retrier is asyncio.current_task():
                self._retrier = None

    def _unhold(self, line: _Line, member: _Member | None = None) -> None:
        """A slot may have freed: the jobs held (only `member`'s, when one of theirs left and
        the server was not full) may ask again, oldest first, as before."""
        if member is not None and line.server_held:
            member = None
        line.server_held = False
        kept: list[_Waiter] = []
        for waiter in line.held:
            if waiter.gone:
                continue
            if member is not None and waiter.member != member:
                kept.append(waiter)
                continue
            waiter.held = None
            queue = line.queues.get(waiter.member[1])
            if queue is not None:
                self._list(line, waiter.member[1], queue)
        line.held = kept
        if kept:
            self._hold(line)  # still asked again by the retries
        self._admit(line)

    def _change_slot(
        self, job_id: int, change: str, then: Callable[[], None] | None = None
    ) -> None:
        """Occupy or release the job's global slot in the background (`leave` and `occupy`
        are called where nothing may wait), after the change before it for the same job."""
        slots = self._slots
        if slots is None:
            return
        before = self._slot_changes.get(job_id)

        async def apply() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            try:
                if change == "release":
                    await slots.release(job_id)
                else:
                    await slots.occupy(job_id)
            except Exception:
                # It frees itself when the job's lease ends; until then it may hold one back.
                log.warning("job %s: could not %s its running slot", job_id, change, exc_info=True)
            if then is not None:
                then()

        task = asyncio.create_task(apply(), name=f"run-slot-{change}-{job_id}")
        self._slot_changes[job_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._slot_changes.get(job_id) is done:
                del self._slot_changes[job_id]

        task.add_done_callback(forget)

    def set_limits(self, guild_id: int, limits: RunLimits) -> None:
        """A server changed its limits: waiting jobs follow the new ones at once."""
        line = self._lines.get((guild_id, None))
        if line is None:
            return
        line.limits = limits
        for user, queue in line.queues.items():
            self._list(line, user, queue)
        if line.held:
            self._unhold(line)
        self._admit(line)
        for _, _, waiter in line.sleepers:
            waiter.mark = -1
            self._wake(waiter)  # what holds them may have changed
        line.sleepers.clear()

    def occupy(self, job_id: int, user_id: int, guild_id: int | None) -> None:
        """Count a job that is already at kie.ai (resumed after a restart, or taken over from
        another process) as running, here and across the processes."""
        if self._start(job_id, (guild_id, user_id)):
            self._change_slot(job_id, "occupy")

    def leave(self, job_id: int) -> None:
        if job_id in self._seats:  # cancelled while waiting
            self.withdraw(job_id)
            return
        entry = self._stop(job_id)
        if entry is None:
            if self._slots is not None:
                # Cancelled while waiting: a slot its task took meanwhile, or its mark of
                # wanting one (`bot.runslots`), goes too.
                self._change_slot(job_id, "release")
            return
        member, started = entry
        ran = max(MIN_RUN_SECONDS, self._clock() - started)
        self._run_seconds += RUN_SECONDS_WEIGHT * (ran - self._run_seconds)
        guild_id, user_id = member
        key: _LineKey = (guild_id, None) if guild_id is not None else (None, user_id)
        line = self._lines.get(key)
        if self._slots is not None:
            # Jobs here held by the shared limits ask again once this slot is free there too.
            retry = None if line is None else (lambda: self._after_release(key, member))
            self._change_slot(job_id, "release", retry)
        if line is None or self._closed:
            return
        queue = line.queues.get(user_id)
        if queue is not None:
            self._list(line, user_id, queue)  # the member may be under their limit again
        self._admit(line)

    def _after_release(self, key: _LineKey, member: _Member) -> None:
        line = self._lines.get(key)
        if line is not None and line.held and not self._closed:
            self._held_lines.discard(line)
            self._unhold(line, member)

    def waiting_jobs(self) -> set[int]:
        """The ids of the jobs still in a line (for shutdown: they have not started)."""
        waiting = {
            waiter.job_id
            for line in self._lines.values()
            for queue in line.queues.values()
            for waiter in queue
            if not waiter.gone
        }
        waiting.update(w.job_id for line in self._lines.values() for w in line.trying)
        return waiting

    # --- the line's bookkeeping -------------------------------------------------------------

    def _join(
        self,
        line: _Line,
        job_id: int,
        member: _Member,
        seat: Seat,
    ) -> _Waiter:
        line.arrivals += 1
        if line.arrivals > line.fenwick.size:
            self._grow(line)
        waiter = _Waiter(job_id, member, line.arrivals, line, seat)
        line.fenwick.add(waiter.seq, 1)
        line.waiting += 1
        self._waiting += 1
        queue = line.queues.setdefault(member[1], collections.deque())
        queue.append(waiter)
        if len(queue) == 1:
            self._list(line, member[1], queue)
        return waiter

    @staticmethod
    def _grow(line: _Line) -> None:
        """A bigger tree with the waiting jobs renumbered from 1, in the same order."""
        alive = sorted(
            [w for queue in line.queues.values() for w in queue if not w.gone] + [*line.trying],
            key=lambda w: w.seq,
        )
        line.fenwick = _Fenwick(max(64, 2 * (len(alive) + 1)))
        renumbered = {}
        for number, waiter in enumerate(alive, start=1):
            renumbered[waiter.seq] = number
            waiter.seq = number
            line.fenwick.add(number, 1)
        for user, queue in line.queues.items():
            line.queues[user] = collections.deque(w for w in queue if not w.gone)
        line.listed = {u: renumbered[s] for u, s in line.listed.items() if s in renumbered}
        line.ready = [(s, u) for u, s in line.listed.items()]
        heapq.heapify(line.ready)
        line.sleepers = [
            (mark, renumbered[s], w) for mark, s, w in line.sleepers if s in renumbered
        ]
        heapq.heapify(line.sleepers)
        line.arrivals = len(alive) + 1

    def _list(self, line: _Line, user: int, queue: collections.deque[_Waiter]) -> None:
        """Put a member with waiting jobs among those who may go next, if under their limit."""
        while queue and queue[0].gone:
            queue.popleft()
        if not queue:
            line.queues.pop(user, None)
            line.listed.pop(user, None)
            return
        head = queue[0]
        if head.held is not None or self._member_full(line.limits, head.member):
            line.listed.pop(user, None)  # parked until one of their jobs ends
            return
        if line.listed.get(user) != head.seq:
            line.listed[user] = head.seq
            heapq.heappush(line.ready, (head.seq, user))

    def _member_full(self, limits: RunLimits, member: _Member) -> bool:
        return limits.per_member is not None and self._per_member[member] >= limits.per_member

    def _server_full(self, limits: RunLimits, guild_id: int | None) -> bool:
        return (
            guild_id is not None
            and limits.per_server is not None
            and self._per_server[guild_id] >= limits.per_server
        )

    def _admit(self, line: _Line) -> None:
        """Let in the oldest jobs whose members are under their limit, while the server has room."""
        if self._closed or line.server_held:
            return
        while line.ready:
            seq, user = line.ready[0]
            if line.listed.get(user) != seq:
                heapq.heappop(line.ready)  # stale: the member's head moved or they were parked
                continue
            queue = line.queues[user]
            waiter = queue[0]
            if self._server_full(line.limits, waiter.member[0]):
                return
            heapq.heappop(line.ready)
            del line.listed[user]
            if self._member_full(line.limits, waiter.member):
                continue  # the limit was lowered meanwhile: parked
            queue.popleft()
            self._start(waiter.job_id, waiter.member)
            if self._slots is None:
                self._remove(line, waiter)
                waiter.admitted = True
            else:
                # Its running slot across the processes is asked for by its own task; it is
                # counted here meanwhile, and keeps its place in the line until it has one.
                waiter.trying = True
                line.trying.add(waiter)
            self._wake(waiter)
            self._list(line, user, queue)

    def _drop(self, line: _Line, waiter: _Waiter) -> None:
        """A waiting job was cancelled: it leaves the line and the next may move up."""
        if waiter.gone:
            return
        self._remove(line, waiter)
        user = waiter.member[1]
        queue = line.queues.get(user)
        if queue is not None:
            self._list(line, user, queue)
        self._admit(line)

    def _remove(self, line: _Line, waiter: _Waiter) -> None:
        waiter.gone = True
        line.fenwick.add(waiter.seq, -1)
        line.waiting -= 1
        self._waiting -= 1
        line.departures += 1
        sleepers = line.sleepers
        while sleepers and sleepers[0][0] <= line.departures and not self._closed:
            mark, _, sleeper = heapq.heappop(sleepers)
            if not sleeper.gone and sleeper.mark == mark:
                sleeper.mark = -1
                self.wakeups += 1
                self._wake(sleeper)
        if line.waiting == 0 and not self._closed:
            # An empty line starts afresh: arrival numbers (and the tree) stay small.
            line.fenwick = _Fenwick()
            line.arrivals = 0
            line.queues.clear()
            line.ready.clear()
            line.listed.clear()
            line.sleepers.clear()
            line.held.clear()
            line.server_held = False

    def _start(self, job_id: int, member: _Member) -> bool:
        if job_id in self._running:
            return False
        self._running[job_id] = (member, self._clock())
        self._per_member[member] += 1
        if member[0] is not None:
            self._per_server[member[0]] += 1
        return True

    def _stop(self, job_id: int) -> tuple[_Member, float] | None:
        """No longer counted as running here; its member and start time, if it was."""
        entry = self._running.pop(job_id, None)
        if entry is None:
            return None
        member = entry[0]
        self._per_member[member] -= 1
        if not self._per_member[member]:
            del self._per_member[member]
        if member[0] is not None:
            self._per_server[member[0]] -= 1
            if not self._per_server[member[0]]:
                del self._per_server[member[0]]
        return entry

    def _wait_of(self, line: _Line, waiter: _Waiter) -> Wait:
        """Where a waiting job stands now, what holds it and when it should leave the line."""
        position = line.fenwick.before(waiter.seq) + 1
        limits = line.limits
        run = self._run_seconds
        member_held = waiter.held is HeldBy.MEMBER_LIMIT or (
            waiter.held is None
            and (
                self._member_full(limits, waiter.member)
                or (
                    limits.per_member is not None
                    and (
                        limits.per_server is None or not self._server_full(limits, waiter.member[0])
                    )
                )
            )
        )
        if member_held and limits.per_member is not None:
            # Held by the member's own jobs: it goes when enough of them have ended.
            queue = line.queues.get(waiter.member[1], collections.deque())
            own = sum(1 for w in queue if not w.gone and w.seq < waiter.seq) + 1
            eta = math.ceil(own / limits.per_member) * run
            return Wait(position, HeldBy.MEMBER_LIMIT, limits.per_member, eta)
        per_server = limits.per_server or 1
        eta = math.ceil(position / per_server) * run
        return Wait(position, HeldBy.SERVER_LIMIT, per_server, eta)
