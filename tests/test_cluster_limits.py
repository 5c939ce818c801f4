"""Running limits across processes (cluster mode): several bots on one PostgreSQL database
count each other's running jobs, so a member's or a server's limit holds wherever their
commands land and whichever process runs a job taken over. Read at the wire (the fake kie.ai's
tasks, the fake Discord's replies) and in the shared database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

import pytest

from bot.domain import JobState
from bot.settings import Settings
from bot.store import PostgresTarget, Storage
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import CreateFault, FakeKie, TaskScript
from tests.helpers import (
    READY_TITLE,
    embed_title,
    eventually,
    field,
    final_answer,
    is_original_edit,
)
from tests.test_cluster import kill, start_processes
from tests.test_fair_use import (
    POLL,
    WAITING_TITLE,
    create_call_for,
    imagine,
    most_at_once,
    slow,
    task_for,
    titles,
)

LEASE = 1.5  # seconds; renewed every 0.5
MEMBER, OTHER = 4242, 5001


@pytest.fixture
def settings(settings: Settings, postgres_target: PostgresTarget) -> Settings:
    return replace(settings, database_url=postgres_target.url, lease_seconds=LEASE)


class MostRunning:
    """Samples the shared database while jobs run: the most jobs of a server (or of one member
    there) holding a running slot at once, across every process."""

    def __init__(self, storage: Storage, guild_id: int, user_id: int | None = None) -> None:
        self.most = 0
        self._task = asyncio.create_task(self._sample(storage, guild_id, user_id))

    async def _sample(self, storage: Storage, guild_id: int, user_id: int | None) -> None:
        while True:
            running = await storage.run_slots.running_slots(guild_id, user_id)
            self.most = max(self.most, running)
            await asyncio.sleep(0.02)

    async def stop(self) -> int:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.most


def kill_without_releasing(running: RunningBot) -> None:
    """`kill`, and, as after `kill -9`, not even the running slots go back: they stay in the
    database until the process's leases run out."""
    running.bot.jobs.run_queue._slots = None
    kill(running)


async def waiting_edit(
    fake: FakeDiscord, interaction: FakeInteraction, timeout: float = 10
) -> RecordedRequest:
    return await fake.wait_for_request(
        lambda r: is_original_edit(r, interaction) and embed_title(r) == WAITING_TITLE, timeout
    )


async def test_a_members_limit_holds_across_the_processes_their_commands_reach(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    bots = await start_processes(
        start_bot, fake_discord, 2, max_running_per_member=1, poll_interval=POLL
    )
    fake_kie.script_next(*(slow(0.4) for _ in range(4)))
    sampler = MostRunning(bots[0].storage, fake_discord.guild_id, MEMBER)
    interactions = []
    for n in range(4):
        fake_discord.send_events_to(n % 2)  # alternately through each process
        interactions.append(await imagine(fake_discord, MEMBER, f"boat {n}"))

    finals = [await final_answer(fake_discord, i, 30) for i in interactions]
    assert [embed_title(f) for f in finals] == [READY_TITLE] * 4
    tasks = fake_kie.created_tasks()
    assert len(tasks) == 4, "each image sent to kie.ai once"
    assert most_at_once(tasks) == 1, "never two of theirs at kie.ai at once"
    assert await sampler.stop() == 1, "never more than one of theirs running, in any process"
    # Each process had one of theirs waiting while the other's ran, and said why.
    held = [i for i in interactions if WAITING_TITLE in titles(fake_discord, i)]
    assert len(held) >= 3
    for interaction in held:
        edit = await waiting_edit(fake_discord, interaction)
        assert "you can have 1 running at once" in field(edit, "Queue")

    async def all_delivered() -> bool:
        return await bots[0].job_states() == {"delivered": 4}

    await eventually(all_delivered, 10, what="every job marked delivered")
    assert await bots[0].units_charged() == 4
    assert await bots[0].storage.run_slots.running_slots(fake_discord.guild_id) == 0


async def test_a_servers_limit_holds_across_processes_for_a_job_taken_over(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    bots = await start_processes(
        start_bot, fake_discord, 3, max_running_per_server=1, poll_interval=POLL
    )
    guild = fake_discord.guild_id
    fake_kie.script_next(TaskScript(states=["waiting"] * 10 + ["success"], step_seconds=0.4))
    fake_discord.send_events_to(0)
    first = await imagine(fake_discord, MEMBER, "first lighthouse")
    await fake_kie.wait_for_tasks(1, 10)
    (job,) = await bots[0].storage.jobs.open_jobs()

    async def at_kie() -> bool:
        (open_job,) = await bots[0].storage.jobs.open_jobs()
        return open_job.state is JobState.SUBMITTED

    # Killed once kie.ai's task id is recorded: taken over, not refunded as interrupted.
    await eventually(at_kie, 5, what="the task id recorded")
    kill_without_releasing(bots[0])

    owners = {b.bot.runner._leases.owner: n for n, b in enumerate(bots)}  # type: ignore[union-attr]

    taken_by = 0

    async def taken_over() -> bool:
        nonlocal taken_by
        holder = await bots[1].storage.leases.holder(job.id)
        taken_by = owners.get(holder, 0) if holder is not None else 0
        return taken_by in (1, 2)

    # Within the lease time and a renewal round.
    await eventually(taken_over, LEASE + 2, what="a live process took the job over")
    # The job taken over still runs at kie.ai and holds the server's one slot, there.
    assert await bots[1].storage.run_slots.running_slots(guild) == 1
    sampler = MostRunning(bots[1].storage, guild)

    # Another member's request reaches the process that did not take the job over.
    fake_discord.send_events_to(3 - taken_by)
    fake_kie.script_next(slow())
    second = await imagine(fake_discord, OTHER, "second lighthouse")
    edit = await waiting_edit(fake_discord, second)
    assert "this server runs 1 at once" in field(edit, "Queue")

    finals = [await final_answer(fake_discord, i, 30) for i in (first, second)]
    assert [embed_title(f) for f in finals] == [READY_TITLE] * 2
    second_sent = task_for(fake_kie, "second lighthouse").created_at
    assert second_sent >= task_for(fake_kie, "first lighthouse").done_at
    assert await sampler.stop() == 1
    assert len(fake_kie.created_tasks()) == 2, "the job taken over was not sent again"

    async def both_delivered() -> bool:
        return await bots[1].job_states() == {"delivered": 2}

    await eventually(both_delivered, 10, what="both jobs marked delivered")
    assert await bots[1].units_charged() == 2


async def test_a_servers_line_is_first_come_first_served_across_processes(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    """The process whose job ends asks for the freed slot at once, the other within a second:
    an older job waiting in the other process still goes first."""
    await start_processes(start_bot, fake_discord, 2, max_running_per_server=1, poll_interval=POLL)
    fake_kie.script_next(*(slow(0.5) for _ in range(4)))
    sent = [(0, MEMBER, "one"), (1, OTHER, "two"), (0, MEMBER, "three"), (0, OTHER, "four")]
    interactions = []
    for session, member, prompt in sent:
        fake_discord.send_events_to(session)
        interactions.append(await imagine(fake_discord, member, prompt))
        if prompt == "one":
            await fake_kie.wait_for_tasks(1, 10)
        else:
            await waiting_edit(fake_discord, interactions[-1])  # in its line before the next

    finals = [await final_answer(fake_discord, i, 30) for i in interactions]
    assert [embed_title(f) for f in finals] == [READY_TITLE] * 4
    tasks = fake_kie.created_tasks()
    assert [t.input["prompt"] for t in tasks] == ["one", "two", "three", "four"]
    assert most_at_once(tasks) == 1


async def test_a_killed_processs_running_slot_frees_within_the_lease_time(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    """Killed while its createTask was on the wire (so the job is refunded, not resumed), the
    process leaves its slot counted; once its lease runs out the slot is free again and the
    other process's waiting job starts."""
    bots = await start_processes(
        start_bot, fake_discord, 2, max_running_per_server=1, poll_interval=POLL
    )
    guild = fake_discord.guild_id
    fake_kie.fail_create_next(CreateFault(200, delay=4 * LEASE))  # an answer that never comes
    fake_discord.send_events_to(0)
    first = await imagine(fake_discord, MEMBER, "cut off")

    async def on_the_wire() -> bool:
        jobs = await bots[0].storage.jobs.open_jobs()
        return bool(jobs) and jobs[0].state is JobState.SUBMITTING

    await eventually(on_the_wire, 5, what="createTask on the wire")
    fake_discord.send_events_to(1)
    fake_kie.script_next(slow())
    second = await imagine(fake_discord, OTHER, "patient")
    edit = await waiting_edit(fake_discord, second)
    assert "this server runs 1 at once" in field(edit, "Queue")
    assert await bots[1].storage.run_slots.running_slots(guild) == 1

    kill_without_releasing(bots[0])
    killed_at = time.monotonic()
    final = await final_answer(fake_discord, second, 20)
    assert embed_title(final) == READY_TITLE
    started = create_call_for(fake_kie, "patient").at
    # The lease runs out, a renewal round takes the job over (and refunds it: kie.ai may have
    # it), and the slot is the waiting job's: all within the lease time and two rounds.
    assert started - killed_at < LEASE + 2 * LEASE / 3 + 1.0
    assert embed_title(await final_answer(fake_discord, first, 20)) != READY_TITLE

    async def settled() -> bool:
        return await bots[1].job_states() == {"delivered": 1, "refunded": 1}

    await eventually(settled, 10, what="one delivered, one refunded")
    assert await bots[1].units_charged() == 1
