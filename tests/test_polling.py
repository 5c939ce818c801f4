"""The shared poll budget: spent first on callbacks, then on tasks most likely finished."""

from __future__ import annotations

import asyncio
import contextlib

from bot.kie import TaskInfo
from bot.kie.polling import DurationModel, PollScheduler, TaskWatch
from bot.kie.ratelimit import Grant, SlidingWindowLimiter
from tests.clock import FakeClock
from tests.helpers import eventually


class RecordingKie:
    """Stands in for KieClient's status queries: records which task was asked about, in order."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._budget = SlidingWindowLimiter(10, 1.0)

    def query_slot(self) -> contextlib.AbstractAsyncContextManager[Grant]:
        return self._budget.use()

    def free_query_slots(self) -> int:
        return self._budget.free_now()

    async def get_task(self, task_id: str, *, slot_held: bool = False) -> TaskInfo:
        assert slot_held, "the scheduler picks a task only once it holds a slot"
        self.asked.append(task_id)
        return TaskInfo(task_id=task_id, state="generating")


def learned_scheduler(
    *durations: float, min_interval: float = 1.0
) -> tuple[RecordingKie, FakeClock, PollScheduler]:
    """A scheduler on a fake clock that has already seen tasks take `durations` seconds."""
    kie, clock = RecordingKie(), FakeClock()
    scheduler = PollScheduler(kie, min_interval=min_interval, clock=clock)  # type: ignore[arg-type]
    for seconds in durations:
        scheduler.durations.add(seconds)
    return kie, clock, scheduler


def test_chance_done_follows_recent_durations() -> None:
    durations = DurationModel()
    for seconds in (10, 12, 14, 16, 18, 20, 22, 24, 26, 28):
        durations.add(seconds)
    early = TaskWatch(1, "early", submitted_at=0.0, last_polled=2.0)
    due = TaskWatch(2, "due", submitted_at=0.0, last_polled=19.0)
    # No recent task finished within 5 s; one seen at 19 s has a fair chance by 21 s.
    assert early.chance_done(5.0, durations) == 0.0
    assert due.chance_done(21.0, durations) > early.chance_done(9.0, durations)
    assert (
        TaskWatch(3, "late", submitted_at=0.0, last_polled=27.0).chance_done(40.0, durations) == 1.0
    )


def test_a_task_is_looked_at_once_it_may_well_have_finished() -> None:
    durations = DurationModel()
    for seconds in (10, 12, 14, 16, 18, 20, 22, 24, 26, 28):
        durations.add(seconds)
    assert durations.done_within(0.2) == 12
    first = TaskWatch(1, "first", submitted_at=0.0, last_polled=1.0)
    # A fifth of recent tasks had finished by 12 s: not worth a query before, although the
    # interval (5 s) would allow one at 6 s.
    assert first.due_at(durations, min_interval=5.0) == 12.0
    # With a short interval, no longer than three of them between looks, whatever the model.
    assert first.due_at(durations, min_interval=1.0) == 4.0
    # Seen running at 19 s (half of recent tasks took longer): a fifth of those had finished
    # by 20 s, so it is worth a query then, or once the interval allows.
    assert TaskWatch(2, "later", 0.0, last_polled=19.0).due_at(durations, 5.0) == 24.0
    assert TaskWatch(3, "mid", 0.0, last_polled=19.0).due_at(durations, 0.5) == 20.0
    # Longer than every recent task: every interval.
    assert TaskWatch(4, "long", 0.0, last_polled=30.0).due_at(durations, 5.0) == 35.0
    # Never asked, or called back: at once.
    assert TaskWatch(5, "new", 0.0).due_at(durations, 5.0) == float("-inf")
    assert TaskWatch(6, "woken", 0.0, 19.0, urgent=True).due_at(durations, 5.0) == float("-inf")
    # Until enough durations are known: every interval.
    assert TaskWatch(7, "cold", 0.0, 1.0).due_at(DurationModel(), 5.0) == 6.0


def test_the_model_forgets_old_durations() -> None:
    durations = DurationModel(max_samples=5)
    for seconds in (100, 100, 100, 100, 100, 1, 1, 1, 1, 1):
        durations.add(seconds)
    assert durations.done_by(2) == 1.0


async def test_a_called_back_task_is_asked_about_before_the_others() -> None:
    kie = RecordingKie()
    clock = FakeClock()
    scheduler = PollScheduler(kie, min_interval=5.0, clock=clock)  # type: ignore[arg-type]
    try:
        scheduler.watch(1, "quiet", look_now=False)
        scheduler.watch(2, "called-back", look_now=False)
        await asyncio.sleep(0.01)
        assert kie.asked == [], "nothing is due before min_interval"
        scheduler.wake(2)
        await eventually(lambda: kie.asked, 1, what="the first status query")
        assert kie.asked == ["called-back"]
    finally:
        await scheduler.stop()


async def test_due_tasks_are_asked_about_in_order_of_likely_completion() -> None:
    kie, clock, scheduler = learned_scheduler(20, 21, 22, 23, 24, 25)
    try:
        young = scheduler.watch(1, "young", age=3.0, look_now=False)
        old = scheduler.watch(2, "old", age=21.0, look_now=False)
        young.last_polled = old.last_polled = clock.now - 2.0
        clock.advance(0.5)
        await eventually(lambda: kie.asked, 1, what="the first status query")
        assert kie.asked[:1] == ["old"]
        assert (await old.updates.get()).state == "generating"
    finally:
        await scheduler.stop()


async def test_a_task_unlikely_to_have_finished_is_not_asked_about_yet() -> None:
    kie, clock, scheduler = learned_scheduler(20, 21, 22, 23, 24, 25)
    try:
        young = scheduler.watch(1, "young", age=3.0, look_now=False)
        young.last_polled = clock.now - 1.5
        await asyncio.sleep(0.05)
        assert kie.asked == [], "one second has passed, but it has almost surely not finished"
        clock.advance(1.6)  # three intervals since its last query: asked anyway
        scheduler.watch(2, "just-sent", look_now=False)  # (makes the scheduler look again)
        await eventually(lambda: kie.asked, 1, what="the query after three intervals")
        assert kie.asked == ["young"]
    finally:
        await scheduler.stop()


async def test_the_model_learns_kies_run_time_not_when_a_query_saw_the_result() -> None:
    kie, _, scheduler = learned_scheduler()

    async def finished(task_id: str, *, slot_held: bool = False) -> TaskInfo:
        kie.asked.append(task_id)
        return TaskInfo(task_id=task_id, state="success", run_seconds=7.5)

    kie.get_task = finished  # type: ignore[method-assign]
    try:
        scheduler.watch(1, "done", age=30.0, look_now=True)
        await eventually(lambda: kie.asked, 1, what="the status query")
        await eventually(lambda: scheduler.durations.done_by(7.5) == 1.0, 1, what="learning")
        assert scheduler.durations.done_by(7.4) == 0.0, "not 30 s: the age it was seen at"
    finally:
        await scheduler.stop()


async def test_a_callback_jumps_ahead_of_polls_already_waiting_for_the_budget() -> None:
    kie = RecordingKie()
    kie._budget = SlidingWindowLimiter(1, 0.2)  # a tight budget: every query waits its turn
    scheduler = PollScheduler(kie, min_interval=0.0)  # type: ignore[arg-type]
    try:
        for n in range(5):
            scheduler.watch(n, f"stale-{n}", look_now=True)
        # The first query goes out; the rest wait for the budget.
        await eventually(lambda: kie.asked, 1, what="the first status query")
        scheduler.watch(99, "called-back", look_now=False)
        scheduler.wake(99)
        await eventually(lambda: "called-back" in kie.asked, 2)
        assert kie.asked.index("called-back") == 1
    finally:
        await scheduler.stop()


async def test_routine_polls_leave_part_of_the_budget_for_callbacks() -> None:
    kie = RecordingKie()  # a budget of 10 queries per second
    scheduler = PollScheduler(kie, min_interval=0.5, reserve_for_wakeups=3)  # type: ignore[arg-type]
    try:
        for n in range(20):
            scheduler.watch(n, f"routine-{n}", look_now=True)
        # Seven go out at once; an eighth routine poll would have to wait for the window (1 s).
        await eventually(lambda: len(kie.asked) >= 7, 0.9, what="seven routine polls")
        await asyncio.sleep(0.1)
        assert len(kie.asked) == 7, "three of the ten slots stay free"
        scheduler.watch(99, "called-back", look_now=False)
        scheduler.wake(99)
        # At once, from the reserve, not after the window slides.
        await eventually(lambda: kie.asked[-1] == "called-back", 0.3, what="the woken query")
    finally:
        await scheduler.stop()
