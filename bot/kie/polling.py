"""One shared budget of kie.ai status queries, spent on the tasks most likely to have finished.

kie.ai allows 10 recordInfo queries per second per key, whatever the number of waiting members.
Instead of every job polling on its own timer, jobs register their task here and one scheduler
decides which task to query next:

- a task kie.ai just called back about goes first (the callback is only a wake-up call);
- then, among tasks not queried in the last `min_interval` seconds, the one with the highest
  chance of having finished since it was last queried, judged from how long recent tasks took;
- until enough durations are known, the task queried longest ago.

Once durations are known, a task is not asked about merely because `min_interval` has passed:
only when at least `WORTH_A_LOOK` of the tasks still running at its last query had finished
by its age (or after `LOOK_AT_LEAST_EVERY` intervals, or past every recent duration). Early
queries that almost surely answer "still generating" cost the bot and the budget for nothing.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.kie.breaker import CircuitBreaker
from bot.kie.client import KieClient
from bot.kie.errors import KieError
from bot.kie.models import TaskInfo

log = logging.getLogger(__name__)

MIN_SAMPLES = 5
MAX_SAMPLES = 200
MAX_QUERIES_IN_FLIGHT = 10
RESERVE_RECHECK = 0.05  # seconds between looks at the budget while routine polls hold back
# A routine query is worth it once recent durations give the task this chance of having
# finished since its last query: about one task in five answers "done" at its first look...
WORTH_A_LOOK = 0.2
# ...and none goes longer than this many `min_interval`s without one, whatever the model says.
LOOK_AT_LEAST_EVERY = 3


class DurationModel:
    """Recent task durations (seconds from submission to a seen result), as an empirical CDF."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self._recent: deque[float] = deque(maxlen=max_samples)
        self._sorted: list[float] = []

    def add(self, seconds: float) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._sorted.remove(self._recent[0])
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)

    @property
    def known(self) -> bool:
        return len(self._sorted) >= MIN_SAMPLES

    def done_by(self, seconds: float) -> float:
        """The share of recent tasks that had finished `seconds` after submission."""
        return bisect.bisect_right(self._sorted, seconds) / len(self._sorted)

    def longest(self) -> float | None:
        """The longest recent duration; None until enough are known."""
        return self._sorted[-1] if self.known else None

    def done_within(self, share: float) -> float:
        """The shortest duration by which `share` (0..1) of recent tasks had finished."""
        index = min(max(math.ceil(share * len(self._sorted)) - 1, 0), len(self._sorted) - 1)
        return self._sorted[index]


@dataclass(eq=False)
class TaskWatch:
    job_id: int
    task_id: str
    submitted_at: float  # scheduler clock
    last_polled: float = -math.inf
    urgent: bool = False
    updates: asyncio.Queue[TaskInfo] = field(default_factory=asyncio.Queue)

    def chance_done(self, now: float, durations: DurationModel) -> float:
        """How likely the task finished between its last query and now."""
        if not durations.known or self.last_polled == -math.inf:
            return 0.0
        before = durations.done_by(self.last_polled - self.submitted_at)
        after = durations.done_by(now - self.submitted_at)
        return (after - before) / max(1.0 - before, 1e-6)

    def due_at(self, durations: DurationModel, min_interval: float) -> float:
        """When a query of this task is next worth it (the scheduler's clock): at once when
        kie.ai called back or it was never asked; else `min_interval` after the last query at
        the earliest, and later while recent durations say it is most likely still running."""
        if self.urgent or self.last_polled == -math.inf:
            return -math.inf
        earliest = self.last_polled + min_interval
        if not durations.known:
            return earliest
        seen = durations.done_by(self.last_polled - self.submitted_at)
        if seen >= 1.0:  # already longer than every recent task: look every interval
            return earliest
        likely = self.submitted_at + durations.done_within(seen + WORTH_A_LOOK * (1.0 - seen))
        return min(max(earliest, likely), self.last_polled + LOOK_AT_LEAST_EVERY * min_interval)


class PollScheduler:
    """Decides when each submitted task's status is asked of kie.ai, within one shared budget.

    One per process; `JobService` registers a task after createTask and waits on its watch,
    the callback handler (`WebhookServer`) wakes a task the moment kie.ai calls back, and the
    scheduler spends the recordInfo budget (10 per second per key) on the tasks most likely to
    have finished (learned from recent durations), keeping a reserve for wake-ups. It lives
    as long as the bot and is stopped at shutdown.
    """

    def __init__(
        self,
        kie: KieClient,
        *,
        min_interval: float,
        reserve_for_wakeups: int = 0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[float, float], float] = random.uniform,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._kie = kie
        self._breaker = breaker  # kie.ai's: no polls while it is open
        self._min_interval = min_interval
        # With callbacks on, routine polls leave this many slots of each second's budget free,
        # so a task kie.ai just called back about never waits behind them.
        self._reserve = reserve_for_wakeups
        self._clock = clock
        self._jitter = jitter
        self._watches: dict[int, TaskWatch] = {}
        self.durations = DurationModel()
        self._changed = asyncio.Event()
        self._pending = 0  # queries waiting for a slot or on the wire
        self._runner: asyncio.Task[None] | None = None
        self._queries: set[asyncio.Task[None]] = set()

    def watch(self, job_id: int, task_id: str, *, age: float = 0.0, look_now: bool) -> TaskWatch:
        """Start watching a task that was submitted `age` seconds ago."""
        watch = TaskWatch(job_id, task_id, self._clock() - age)
        if not look_now:
            # Tasks are submitted in bursts; spread their first routine polls so they do not
            # all fall due in the same second.
            watch.last_polled = self._clock() - self._jitter(0.0, 0.5) * self._min_interval
        self._watches[job_id] = watch
        self._ensure_running()
        self._changed.set()
        return watch

    def unwatch(self, watch: TaskWatch) -> None:
        if self._watches.get(watch.job_id) is watch:
            del self._watches[watch.job_id]

    def wake(self, job_id: int) -> bool:
        """kie.ai says this job's task changed: query it next. False when this scheduler
        watches no such job (another process, or another account's scheduler, may)."""
        watch = self._watches.get(job_id)
        if watch is None:
            return False
        watch.urgent = True
        self._changed.set()
        return True

    async def stop(self) -> None:
        tasks = [t for t in (self._runner, *self._queries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None

    def _ensure_running(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="kie-poll-scheduler")

    async def _run(self) -> None:
        while True:
            if self._breaker is not None and not self._breaker.closed:
                # kie.ai is down: polls wait with new tasks and only the breaker's probe asks
                # it; each job's deadline runs on, so a long outage still ends in a refund.
                await self._breaker.wait_closed()
                continue
            due, urgent, wait = self._due()
            # With the key's budget shared by several processes (PostgreSQL), the free slots
            # are the shared window's as last seen, so the reserve is kept across them all.
            held_back = not urgent and self._kie.free_query_slots() <= self._reserve
            if due <= self._pending or self._pending >= MAX_QUERIES_IN_FLIGHT or held_back:
                if held_back and due > self._pending:
                    wait = RESERVE_RECHECK
                self._changed.clear()
                try:
                    async with asyncio.timeout(wait if due <= self._pending or held_back else None):
                        await self._changed.wait()
                except TimeoutError:
                    pass
                continue
            self._pending += 1
            query = asyncio.create_task(self._query_best(), name="kie-status-query")
            self._queries.add(query)
            query.add_done_callback(self._queries.discard)

    def _due(self) -> tuple[int, int, float | None]:
        """How many tasks are due for a query (and how many of those kie.ai called back
        about), and how long until the next one is due."""
        now = self._clock()
        due = urgent = 0
        soonest: float | None = None
        for watch in self._watches.values():
            due_in = watch.due_at(self.durations, self._min_interval) - now
            if due_in <= 0:
                due += 1
                urgent += watch.urgent
            else:
                soonest = due_in if soonest is None else min(soonest, due_in)
        return due, urgent, soonest

    def _best(self) -> TaskWatch | None:
        """The due task most worth a query now: called back, then likely done, then stalest."""
        now = self._clock()
        best: TaskWatch | None = None
        best_key: tuple[bool, float, float] | None = None
        for watch in self._watches.values():
            if watch.due_at(self.durations, self._min_interval) > now:
                continue
            key = (watch.urgent, watch.chance_done(now, self.durations), now - watch.last_polled)
            if best_key is None or key > best_key:
                best, best_key = watch, key
        return best

    async def _query_best(self) -> None:
        try:
            # The task is chosen only once a query slot is ours, so a callback that arrives
            # while we wait for the slot still goes first.
            async with self._kie.query_slot() as slot:
                watch = self._best()
                if watch is None or (
                    not watch.urgent and self._kie.free_query_slots() < self._reserve
                ):
                    slot.unused = True
                    return
                watch.urgent = False
                watch.last_polled = self._clock()
                try:
                    info = await self._kie.get_task(watch.task_id, slot_held=True)
                except KieError as error:
                    log.info("status query for task %s failed (%s)", watch.task_id, error)
                    return
        finally:
            self._pending -= 1
            self._changed.set()
        if info.task_id != watch.task_id:
            log.warning("kie.ai answered for another task than %s; ignored", watch.task_id)
            return
        if info.succeeded:
            # kie.ai's own run time where it says: the age at which a query saw the result is
            # later by however long the task waited for that query, and learning from it would
            # push the first looks ever later.
            seen = self._clock() - watch.submitted_at
            self.durations.add(info.run_seconds if info.run_seconds is not None else seen)
        watch.updates.put_nowait(info)
