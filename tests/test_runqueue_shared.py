"""The fair-use line when several processes share the database (`bot.runqueue` with
`bot.runslots`): real asyncio, two lines standing for two processes, and an in-memory stand-in
for the database's running slots that counts them as the SQL does (`tests/test_run_slots.py`
checks the SQL itself on both backends)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.runqueue import HeldBy, RunLimits, RunQueue, Wait
from bot.runslots import SharedSlots
from tests.helpers import eventually
from tests.test_runqueue import ALICE, BOB, CAROL, GUILD, Entry, Line, settle

RETRY = 0.05
ONE_EACH = RunLimits(per_member=1, per_server=None)
ONE_SERVER = RunLimits(per_member=None, per_server=1)


class SharedRunning:
    """Running slots every line shares, as the database keeps them: job id -> (guild, user)."""

    def __init__(self) -> None:
        self.slots: dict[int, tuple[int | None, int]] = {}
        self.asked: list[int] = []  # each take, by job id: one database round trip each
        self.gate: asyncio.Event | None = None  # set: takes wait for it (a slow database)

    async def take_slot(
        self,
        job_id: int,
        user_id: int,
        guild_id: int | None,
        per_member: int | None,
        per_server: int | None,
        wanted_fresh: float,
    ) -> str | None:
        self.asked.append(job_id)
        await asyncio.sleep(0)  # the round trip
        if self.gate is not None:
            await self.gate.wait()
        others = [member for job, member in self.slots.items() if job != job_id]
        if per_member is not None and others.count((guild_id, user_id)) >= per_member:
            return "member"
        in_server = sum(guild == guild_id for guild, _ in others)
        if guild_id is not None and per_server is not None and in_server >= per_server:
            return "server"
        self.slots[job_id] = (guild_id, user_id)
        return None

    async def occupy_slot(self, job_id: int) -> None:
        self.slots.setdefault(job_id, (GUILD, 0))

    async def release_slot(self, job_id: int, owner: str) -> None:
        self.slots.pop(job_id, None)

    async def running_slots(self, guild_id: int | None, user_id: int | None = None) -> int:
        return sum(
            guild == guild_id and (user_id is None or user == user_id)
            for guild, user in self.slots.values()
        )


@pytest.fixture
def shared() -> SharedRunning:
    return SharedRunning()


async def process(shared: SharedRunning, name: str) -> Line:
    line = Line()
    line.queue = RunQueue()
    line.queue.share(SharedSlots(shared, name, retry_seconds=RETRY))
    return line


@pytest.fixture
async def lines(shared: SharedRunning) -> AsyncIterator[tuple[Line, Line]]:
    first, second = await process(shared, "p1"), await process(shared, "p2")
    yield first, second
    for line in (first, second):
        line.queue.close()


def last(entry: Entry) -> Wait | None:
    return entry.last_wait


async def test_a_member_at_their_limit_in_one_process_waits_in_another(
    lines: tuple[Line, Line], shared: SharedRunning
) -> None:
    here, there = lines
    running = await here.enter(1, ALICE, GUILD, ONE_EACH)
    held = await there.enter(2, ALICE, GUILD, ONE_EACH)
    assert running.admitted and not held.admitted
    assert last(held) == Wait(1, HeldBy.MEMBER_LIMIT, 1), "waiting for their other image"
    assert there.queue.waiting() == 1 and there.queue.running() == 0

    here.queue.leave(1)  # ended in the first process: its slot goes back
    await eventually(lambda: held.admitted, 2, what="let in within a retry")
    assert set(shared.slots) == {2}


async def test_a_job_held_by_another_process_keeps_its_place_and_lets_others_pass(
    lines: tuple[Line, Line], shared: SharedRunning
) -> None:
    here, _ = lines
    shared.slots[99] = (GUILD, ALICE)  # Alice's image running in another process
    alice = await here.enter(1, ALICE, GUILD, ONE_EACH)
    bob = await here.enter(2, BOB, GUILD, ONE_EACH)
    carol = await here.enter(3, CAROL, GUILD, ONE_EACH)
    assert bob.admitted and carol.admitted, "one member's wait blocks nobody else"
    assert not alice.admitted
    assert last(alice) == Wait(1, HeldBy.MEMBER_LIMIT, 1)

    asked = len(shared.asked)
    await asyncio.sleep(3 * RETRY)
    assert len(shared.asked) - asked <= 4, "asks again about once per retry, no more"
    del shared.slots[99]  # the other process's image ended
    await eventually(lambda: alice.admitted, 2, what="let in once the slot freed")


async def test_a_server_full_across_processes_asks_once_not_once_per_waiting_job(
    lines: tuple[Line, Line], shared: SharedRunning
) -> None:
    here, _ = lines
    shared.slots[99] = (GUILD, CAROL)  # the server's one slot, used in another process
    entries = [
        await here.enter(n, member, GUILD, ONE_SERVER) for n, member in ((1, ALICE), (2, BOB))
    ]
    assert shared.asked == [1], "the first refusal holds the whole line until a retry"
    assert [last(e) for e in entries] == [
        Wait(1, HeldBy.SERVER_LIMIT, 1),
        Wait(2, HeldBy.SERVER_LIMIT, 1),
    ]
    del shared.slots[99]
    await eventually(lambda: entries[0].admitted, 2, what="the oldest goes first")
    await settle()
    assert not entries[1].admitted, "the server runs one at once, across the processes"
    here.queue.leave(1)
    await eventually(lambda: entries[1].admitted, 2, what="the next once the first ended")


async def test_a_job_cancelled_while_asking_gives_its_slot_back(
    lines: tuple[Line, Line], shared: SharedRunning
) -> None:
    here, _ = lines
    shared.gate = asyncio.Event()
    asking = await here.enter(1, ALICE, GUILD, ONE_EACH)
    assert shared.asked == [1] and not asking.admitted
    here.cancel(asking)
    shared.gate.set()  # the database answers after all: the slot was taken
    await settle()
    await here.queue.settle(within=1)
    assert shared.slots == {}, "given back"
    assert here.queue.waiting() == 0 and here.queue.running() == 0


async def test_one_process_alone_never_asks_the_database(shared: SharedRunning) -> None:
    alone = Line()  # SQLite: the line is not shared
    entries = [await alone.enter(n, ALICE, GUILD, ONE_EACH) for n in (1, 2)]
    assert entries[0].admitted and not entries[1].admitted
    alone.queue.leave(1)
    await settle()
    assert entries[1].admitted
    assert shared.asked == []
    alone.queue.close()
