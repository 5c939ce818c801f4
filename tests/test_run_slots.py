"""Running slots shared through the database (cluster mode): the store's side, on SQLite and
on PostgreSQL. A slot counts only while its job is open and its lease live; takes never pass a
limit, however many run at once; an older job that found its server full goes first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.domain import ImageRequest, Job, NewJob, SpendLimits
from bot.store import DatabaseTarget, Storage, open_storage
from tests.clock import FakeClock

GUILD = 10
MEMBER, OTHER = 1, 2
FRESH = 3.0  # how long a "wanted" mark holds younger jobs back


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
async def store(storage_target: DatabaseTarget, clock: FakeClock) -> AsyncIterator[Storage]:
    store = await open_storage(storage_target, clock=clock)
    yield store
    await store.close()


async def job(store: Storage, clock: FakeClock, user: int = MEMBER, owner: str = "p1") -> Job:
    """A charged job, leased by `owner` for 30 s."""
    made = await store.jobs.reserve(
        NewJob(user, GUILD, 20, "2027-01-15", 1, ImageRequest("a prompt", "1:1", "1K")),
        SpendLimits(100),
    )
    assert isinstance(made, Job)
    assert await store.leases.claim(made.id, owner, clock() + 30, 30)
    return made


async def test_a_member_at_their_limit_in_one_process_is_refused_in_another(
    store: Storage, clock: FakeClock
) -> None:
    first = await job(store, clock, owner="p1")
    second = await job(store, clock, owner="p2")
    slots = store.run_slots
    assert await slots.take_slot(first.id, MEMBER, GUILD, 1, None, FRESH) is None
    assert await slots.take_slot(second.id, MEMBER, GUILD, 1, None, FRESH) == "member"
    assert await slots.running_slots(GUILD, MEMBER) == 1
    # Asking again for a job that holds its slot counts it once (not against itself).
    assert await slots.take_slot(first.id, MEMBER, GUILD, 1, None, FRESH) is None

    await slots.release_slot(first.id, "p1")
    assert await slots.take_slot(second.id, MEMBER, GUILD, 1, None, FRESH) is None
    assert await slots.running_slots(GUILD, MEMBER) == 1


async def test_a_dead_processs_slots_free_themselves_when_its_leases_run_out(
    store: Storage, clock: FakeClock
) -> None:
    dead = await job(store, clock, owner="dead")
    alive = await job(store, clock, owner="alive")
    slots = store.run_slots
    assert await slots.take_slot(dead.id, MEMBER, GUILD, 1, 1, FRESH) is None
    clock.advance(29)
    await store.leases.renew("alive", clock() + 30)  # only the live process renews
    assert await slots.take_slot(alive.id, MEMBER, GUILD, 1, 1, FRESH) == "member"
    clock.advance(2)  # the dead process's lease ran out: its slot counts no more
    assert await slots.running_slots(GUILD) == 0
    assert await slots.take_slot(alive.id, MEMBER, GUILD, 1, 1, FRESH) is None


async def test_a_job_taken_over_before_kie_ai_saw_it_gives_its_slot_back(
    store: Storage, clock: FakeClock
) -> None:
    taken = await job(store, clock, owner="dead")
    assert await store.run_slots.take_slot(taken.id, MEMBER, GUILD, 1, 1, FRESH) is None
    clock.advance(31)
    assert await store.leases.take_expired("heir", clock() + 30, 30, 100) == [taken.id]
    # Reserved: it goes back into a line at the new process, holding nothing meanwhile.
    assert await store.run_slots.running_slots(GUILD) == 0
    await store.run_slots.occupy_slot(taken.id)  # had it been at kie.ai: still running
    assert await store.run_slots.running_slots(GUILD) == 1
    # The old process waking late cannot give away the slot its heir holds now.
    await store.run_slots.release_slot(taken.id, "dead")
    assert await store.run_slots.running_slots(GUILD) == 1
    await store.run_slots.release_slot(taken.id, "heir")
    assert await store.run_slots.running_slots(GUILD) == 0


async def test_a_server_full_across_processes_lets_its_oldest_waiting_job_go_first(
    store: Storage, clock: FakeClock
) -> None:
    running = await job(store, clock, owner="p1")
    older = await job(store, clock, user=OTHER, owner="p2")
    younger = await job(store, clock, user=MEMBER, owner="p1")
    slots = store.run_slots
    assert await slots.take_slot(running.id, MEMBER, GUILD, None, 1, FRESH) is None
    assert await slots.take_slot(older.id, OTHER, GUILD, None, 1, FRESH) == "server"
    await slots.release_slot(running.id, "p1")
    # The process whose job ended asks first, but an older job wants the slot: it waits.
    assert await slots.take_slot(younger.id, MEMBER, GUILD, None, 1, FRESH) == "server"
    assert await slots.take_slot(older.id, OTHER, GUILD, None, 1, FRESH) is None
    await slots.release_slot(older.id, "p2")
    assert await slots.take_slot(younger.id, MEMBER, GUILD, None, 1, FRESH) is None


async def test_a_wanted_mark_left_behind_holds_nobody_for_long(
    store: Storage, clock: FakeClock
) -> None:
    older = await job(store, clock, user=OTHER, owner="p2")
    running = await job(store, clock, owner="p1")
    younger = await job(store, clock, owner="p1")
    slots = store.run_slots
    assert await slots.take_slot(running.id, MEMBER, GUILD, None, 1, FRESH) is None
    assert await slots.take_slot(older.id, OTHER, GUILD, None, 1, FRESH) == "server"
    await slots.release_slot(running.id, "p1")
    clock.advance(FRESH + 1)  # the older job's process stopped asking (e.g. it was cancelled)
    await store.leases.renew("p1", clock() + 30)
    await store.leases.renew("p2", clock() + 30)
    assert await slots.take_slot(younger.id, MEMBER, GUILD, None, 1, FRESH) is None


async def test_simultaneous_takes_never_pass_the_limits(store: Storage, clock: FakeClock) -> None:
    jobs = [await job(store, clock, user=MEMBER + n % 3, owner=f"p{n % 3}") for n in range(12)]
    slots = store.run_slots
    answers = await asyncio.gather(
        *(slots.take_slot(j.id, j.user_id, GUILD, 1, 2, FRESH) for j in jobs)
    )
    assert sum(answer is None for answer in answers) == 2
    assert await slots.running_slots(GUILD) == 2
    for user in (MEMBER, MEMBER + 1, MEMBER + 2):
        assert await slots.running_slots(GUILD, user) <= 1
