"""The fair-use line on its own (`bot.runqueue`): real asyncio, no bot, no Discord, no kie.ai."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from bot.runqueue import HeldBy, RunLimits, RunQueue, Wait

GUILD = 1
OTHER_GUILD = 2
ALICE, BOB, CAROL, DAVE = 11, 12, 13, 14


@dataclass(eq=False)
class Entry:
    """One job in the line as the bot puts it there (`RunQueue.join`), with every position it
    was told."""

    job_id: int
    waits: list[Wait] = field(default_factory=list)
    admitted: bool = False
    cancelled: bool = False

    @property
    def last_wait(self) -> Wait | None:
        return self.waits[-1] if self.waits else None


@dataclass(eq=False)
class EntrySeat:
    """An entry's seat in the line: what it is told lands on the entry."""

    entry: Entry
    order: list[int]  # the line's job ids in the order they were let in

    def waiting(self, wait: Wait) -> None:
        self.entry.waits.append(wait)

    def admitted(self) -> None:
        self.entry.admitted = True
        self.order.append(self.entry.job_id)


class Line:
    """A RunQueue plus the jobs a test sent into it, each joining as the bot does."""

    def __init__(self) -> None:
        self.queue = RunQueue()
        self.entries: list[Entry] = []
        self.admitted: list[int] = []  # job ids in the order they were let in

    async def enter(
        self, job_id: int, user_id: int, guild_id: int | None, limits: RunLimits
    ) -> Entry:
        entry = Entry(job_id)
        seat = EntrySeat(entry, self.admitted)
        if self.queue.join(job_id, user_id, guild_id, limits, seat):
            seat.admitted()  # room: it runs at once, and is never told it waits
        self.entries.append(entry)
        await settle()
        return entry

    def cancel(self, entry: Entry) -> None:
        """The member cancels a waiting job, as the bot does it (`JobService.cancel`)."""
        entry.cancelled = True
        self.queue.leave(entry.job_id)


async def settle() -> None:
    """Let every task that can run do so (the line needs no time, only turns of the loop)."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
async def line() -> AsyncIterator[Line]:
    line = Line()
    yield line
    line.queue.close()


def wait(position: int, held_by: HeldBy, limit: int) -> Wait:
    return Wait(position=position, held_by=held_by, limit=limit)


# --- admission ------------------------------------------------------------------------------------


async def test_a_member_runs_up_to_their_limit_and_the_next_job_waits(line: Line) -> None:
    limits = RunLimits(per_member=2, per_server=None)
    first = await line.enter(1, ALICE, GUILD, limits)
    second = await line.enter(2, ALICE, GUILD, limits)
    third = await line.enter(3, ALICE, GUILD, limits)

    assert first.admitted and second.admitted
    assert first.waits == [] and second.waits == [], "a job let in at once is never 'waiting'"
    assert not third.admitted
    assert third.waits == [wait(1, HeldBy.MEMBER_LIMIT, 2)]
    assert (line.queue.running(), line.queue.running(GUILD), line.queue.waiting()) == (2, 2, 1)


async def test_a_server_runs_up_to_its_limit_across_members(line: Line) -> None:
    limits = RunLimits(per_member=None, per_server=2)
    alice = await line.enter(1, ALICE, GUILD, limits)
    bob = await line.enter(2, BOB, GUILD, limits)
    carol = await line.enter(3, CAROL, GUILD, limits)
    dave = await line.enter(4, DAVE, GUILD, limits)

    assert alice.admitted and bob.admitted
    assert carol.waits == [wait(1, HeldBy.SERVER_LIMIT, 2)]
    assert dave.waits == [wait(2, HeldBy.SERVER_LIMIT, 2)]
    # Another server's line is not this one's business.
    elsewhere = await line.enter(5, CAROL, OTHER_GUILD, limits)
    assert elsewhere.admitted
    assert line.queue.running(GUILD) == 2 and line.queue.running(OTHER_GUILD) == 1


async def test_none_limits_mean_no_limit_at_all(line: Line) -> None:
    unlimited = RunLimits(per_member=None, per_server=None)
    entries = [await line.enter(n, ALICE, GUILD, unlimited) for n in range(50)]
    entries += [await line.enter(100 + n, ALICE, None, unlimited) for n in range(10)]
    assert all(entry.admitted for entry in entries)
    assert line.queue.waiting() == 0
    assert line.queue.running() == 60


# --- order ----------------------------------------------------------------------------------------


async def test_waiting_jobs_are_let_in_first_in_first_out(line: Line) -> None:
    limits = RunLimits(per_member=None, per_server=1)
    await line.enter(1, ALICE, GUILD, limits)
    behind = ((2, BOB), (3, CAROL), (4, DAVE), (5, BOB))
    waiting = [await line.enter(job, member, GUILD, limits) for job, member in behind]
    assert [entry.last_wait for entry in waiting] == [
        wait(n, HeldBy.SERVER_LIMIT, 1) for n in (1, 2, 3, 4)
    ]
    for leaving in (1, 2, 3, 4):
        line.queue.leave(leaving)
        await settle()
    assert line.admitted == [1, 2, 3, 4, 5]
    assert line.queue.waiting() == 0


async def test_a_job_held_only_by_its_members_limit_lets_others_pass(line: Line) -> None:
    limits = RunLimits(per_member=1, per_server=2)
    await line.enter(1, ALICE, GUILD, limits)
    alice_again = await line.enter(2, ALICE, GUILD, limits)
    bob = await line.enter(3, BOB, GUILD, limits)

    assert alice_again.waits == [wait(1, HeldBy.MEMBER_LIMIT, 1)]
    assert bob.admitted, "Alice's second job must not hold up Bob"

    # Now the server is full; Carol waits behind Alice, for the server.
    carol = await line.enter(4, CAROL, GUILD, limits)
    assert carol.last_wait is not None and carol.last_wait.held_by is HeldBy.SERVER_LIMIT
    # Bob's place frees up: Alice still has one running, so Carol passes her.
    line.queue.leave(3)
    await settle()
    assert carol.admitted and not alice_again.admitted
    line.queue.leave(1)
    await settle()
    assert alice_again.admitted
    assert line.admitted == [1, 3, 4, 2]


# --- positions ------------------------------------------------------------------------------------


async def test_positions_are_counted_per_server(line: Line) -> None:
    limits = RunLimits(per_member=None, per_server=1)
    await line.enter(1, ALICE, GUILD, limits)
    here = [await line.enter(n, BOB, GUILD, limits) for n in (2, 3)]
    await line.enter(4, CAROL, OTHER_GUILD, limits)
    there = await line.enter(5, DAVE, OTHER_GUILD, limits)
    assert [entry.last_wait for entry in here] == [
        wait(1, HeldBy.SERVER_LIMIT, 1),
        wait(2, HeldBy.SERVER_LIMIT, 1),
    ]
    assert there.waits == [wait(1, HeldBy.SERVER_LIMIT, 1)], "first in its own server's line"


async def test_in_direct_messages_each_member_has_their_own_line(line: Line) -> None:
    limits = RunLimits(per_member=1, per_server=1)
    await line.enter(1, ALICE, None, limits)
    alice_second = await line.enter(2, ALICE, None, limits)
    bob_first = await line.enter(3, BOB, None, limits)
    bob_second = await line.enter(4, BOB, None, limits)
    alice_third = await line.enter(5, ALICE, None, limits)

    assert bob_first.admitted, "no server limit applies in direct messages"
    assert alice_second.waits == [wait(1, HeldBy.MEMBER_LIMIT, 1)]
    assert bob_second.waits == [wait(1, HeldBy.MEMBER_LIMIT, 1)]
    assert alice_third.waits == [wait(2, HeldBy.MEMBER_LIMIT, 1)]


async def test_a_waiting_job_hears_again_once_the_line_has_moved_by_half_its_place(
    line: Line,
) -> None:
    limits = RunLimits(per_member=None, per_server=1)
    await line.enter(1, ALICE, GUILD, limits)
    bob = await line.enter(2, BOB, GUILD, limits)
    carol = await line.enter(3, CAROL, GUILD, limits)
    dave = await line.enter(4, DAVE, GUILD, limits)

    # Comings and goings elsewhere do not move this line: no news for anyone in it.
    await line.enter(5, ALICE, OTHER_GUILD, limits)
    line.queue.leave(5)
    await line.enter(6, ALICE, GUILD, limits)  # joins at the back
    await settle()
    assert [len(e.waits) for e in (bob, carol, dave)] == [1, 1, 1]

    line.queue.leave(1)
    await settle()
    assert bob.admitted
    assert carol.waits == [wait(2, HeldBy.SERVER_LIMIT, 1), wait(1, HeldBy.SERVER_LIMIT, 1)]
    assert dave.waits == [wait(3, HeldBy.SERVER_LIMIT, 1)], "one step of three is not news"
    line.queue.leave(2)
    await settle()
    assert carol.admitted
    assert dave.waits == [wait(3, HeldBy.SERVER_LIMIT, 1), wait(1, HeldBy.SERVER_LIMIT, 1)]


async def test_a_long_line_wakes_few_waiters_per_departure_and_shows_true_places(
    line: Line,
) -> None:
    """Each waiter sleeps until the line has moved by half its place: draining n jobs wakes
    about n log n of them in all, not n²/2, and every place a job is told is its true one."""
    n = 600
    limits = RunLimits(per_member=1, per_server=1)
    await line.enter(0, 0, GUILD, limits)
    waiting = [await line.enter(job, job, GUILD, limits) for job in range(1, n + 1)]
    assert [e.waits[0].position for e in waiting] == list(range(1, n + 1))
    # A few leave while waiting: those behind them are a place further on, when next told.
    for gone in waiting[10:20]:
        line.cancel(gone)
    await settle()
    staying = [e for e in waiting if not e.cancelled]
    for job in [0, *(e.job_id for e in staying)]:
        line.queue.leave(job)
        await settle()
        still = [e for e in staying if not e.admitted]
        for place, entry in enumerate(still, start=1):
            told = entry.last_wait
            assert told is not None
            assert place <= told.position <= 2 * place + 1, "a place a job was told is true or half"
    assert line.admitted == [0, *(e.job_id for e in staying)]
    assert line.queue.wakeups < 4 * n * math.log2(n), "about log n wake-ups per waiter"
    told = max(len(e.waits) for e in staying)
    assert told <= math.log2(n) + 2, f"a job heard its place {told} times"


async def test_a_waiting_job_says_when_it_should_start(line: Line) -> None:
    limits = RunLimits(per_member=None, per_server=2)
    for job in (1, 2):
        await line.enter(job, ALICE, GUILD, limits)
    waiting = [await line.enter(job, BOB, GUILD, limits) for job in (3, 4, 5)]
    etas = [e.waits[0].eta_seconds for e in waiting]
    run = line.queue.run_seconds
    assert etas == [run, run, 2 * run], "two places free up every run, learned from recent runs"


@dataclass
class Seat:
    """A waiting job as the bot puts it in line (`RunQueue.join`): what it was told, in order."""

    told: list[Wait | str] = field(default_factory=list)

    def waiting(self, wait: Wait) -> None:
        self.told.append(wait)

    def admitted(self) -> None:
        self.told.append("admitted")


async def test_waiting_jobs_are_told_again_when_their_expected_start_has_come() -> None:
    """No task waits for them: one timer for the whole line wakes each job whose expected start
    came and went, and it hears its place again (the same place: it is still true). Their
    expected starts fall a millisecond or less apart, as in a burst (uvloop runs a timer due
    within half a millisecond at once, as a plain callback)."""
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
    queue = RunQueue()
    queue.recall(1.0003)  # learned run times are not whole milliseconds
    limits = RunLimits(per_member=None, per_server=10)
    for job in range(10):
        assert queue.join(job, job, GUILD, limits, Seat())
    seats = {job: Seat() for job in range(10, 16)}
    for job, seat in seats.items():
        assert not queue.join(job, job, GUILD, limits, seat)
        # Blocking on purpose: the loop's clock moves on (by a millisecond at most) before the
        # next job joins, so its expected start is that much later.
        time.sleep(0.0006)  # noqa: ASYNC251
        await asyncio.sleep(0)

    await asyncio.sleep(1.6)  # past every expected start (1 s), not the next ones (2 s)

    for place, seat in enumerate(seats.values(), start=1):
        assert seat.told == [wait(place, HeldBy.SERVER_LIMIT, 10)] * 2
    assert errors == [], "no callback of the line failed"
    queue.leave(0)
    await settle()
    assert seats[10].told[-1] == "admitted" and seats[11].told[-1] != "admitted"
    queue.close()


async def test_a_job_joins_the_line_as_an_entry_and_is_told_when_it_may_run() -> None:
    """`join`, as the bot uses it: no task waits; the seat hears its place, then its turn."""
    queue = RunQueue()
    seat = Seat()
    limits = RunLimits(per_member=1, per_server=None)
    tasks_before = len(asyncio.all_tasks())
    assert queue.join(1, ALICE, GUILD, limits, Seat()) is True, "room: it runs at once"
    assert queue.join(2, ALICE, GUILD, limits, seat) is False
    assert seat.told == [wait(1, HeldBy.MEMBER_LIMIT, 1)]
    assert len(asyncio.all_tasks()) == tasks_before, "a waiting job holds no task"
    queue.leave(1)
    await settle()
    assert seat.told[-1] == "admitted"
    assert queue.running() == 1 and queue.waiting() == 0
    queue.close()


# --- leaving the line -----------------------------------------------------------------------------


async def test_a_job_cancelled_while_waiting_leaves_the_line_and_the_next_moves_up(
    line: Line,
) -> None:
    limits = RunLimits(per_member=None, per_server=1)
    await line.enter(1, ALICE, GUILD, limits)
    bob = await line.enter(2, BOB, GUILD, limits)
    carol = await line.enter(3, CAROL, GUILD, limits)

    line.cancel(bob)
    await settle()
    assert not bob.admitted
    assert line.queue.waiting() == 1
    assert carol.last_wait == wait(1, HeldBy.SERVER_LIMIT, 1)
    # JobService.run always leaves, whether or not the job ran: harmless for a waiter.
    line.queue.leave(2)
    assert line.queue.running(GUILD) == 1

    line.queue.leave(1)
    await settle()
    assert carol.admitted
    assert line.admitted == [1, 3]
    assert line.queue.running(GUILD) == 1


async def test_leaving_with_an_unknown_or_already_finished_job_changes_nothing(
    line: Line,
) -> None:
    limits = RunLimits(per_member=1, per_server=None)
    line.queue.leave(999)
    await line.enter(1, ALICE, GUILD, limits)
    line.queue.leave(1)
    line.queue.leave(1)  # a second leave must not hand out a second place
    line.queue.leave(999)
    assert line.queue.running() == 0
    await line.enter(2, ALICE, GUILD, limits)
    third = await line.enter(3, ALICE, GUILD, limits)
    assert not third.admitted, "the member's limit of one still holds"
    assert third.waits == [wait(1, HeldBy.MEMBER_LIMIT, 1)]


async def test_jobs_resumed_after_a_restart_count_as_running(line: Line) -> None:
    limits = RunLimits(per_member=1, per_server=2)
    line.queue.occupy(1, ALICE, GUILD)
    line.queue.occupy(1, ALICE, GUILD)  # counted once, however often it is said
    line.queue.occupy(2, BOB, GUILD)
    assert line.queue.running(GUILD) == 2

    alice = await line.enter(3, ALICE, GUILD, limits)
    carol = await line.enter(4, CAROL, GUILD, limits)
    assert alice.waits == [wait(1, HeldBy.MEMBER_LIMIT, 1)]
    assert carol.waits == [wait(2, HeldBy.SERVER_LIMIT, 2)]

    line.queue.leave(2)
    await settle()
    assert carol.admitted and not alice.admitted
    line.queue.leave(1)
    await settle()
    assert alice.admitted
