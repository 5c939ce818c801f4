"""A createTask whose answer was lost: the bot stopped or died while it was on the wire, or
kie.ai's callback outran the answer. Sending it again could make a second paid image, so with
callbacks on, kie.ai's callback to the job's own address names the task and the job goes on to
its image (in whichever process receives the callback and whichever runs the job). Only when
no callback comes within a patience (three times the longest recent task, at least a minute,
at most the job's timeout) is it sent again: kie.ai most likely never got it. Without callbacks
the job is refunded at once (tests/test_durability.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.domain import JobState
from bot.store import PostgresTarget
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import CreateFault, FakeKie, TaskScript
from tests.helpers import READY_TITLE, embed_title, eventually, final_answer, original_edits
from tests.test_cluster import kill, start_processes

PROMPT = "a lighthouse in a storm, oil painting"
CREATE = "/api/v1/jobs/createTask"
LEASE = 1.5
PATIENCE = 6.0  # seconds: the job timeout, which bounds the wait for a lost callback


async def on_the_wire(running: RunningBot) -> bool:
    """The first job is recorded as sent (`submitting`) and kie.ai's answer not in yet."""
    job = await running.storage.jobs.get_job(1)
    return job is not None and job.state is JobState.SUBMITTING


async def two_processes(
    start_bot: StartBot, fake_discord: FakeDiscord, target: PostgresTarget, **overrides: object
) -> list[RunningBot]:
    """Two processes sharing `target` with callbacks on; the first gets the commands."""
    bots = await start_processes(
        start_bot,
        fake_discord,
        2,
        callbacks=True,
        database_url=target.url,
        lease_seconds=LEASE,
        **overrides,
    )
    fake_discord.send_events_to(0)  # the first process gets the command, and dies with it
    return bots


async def kill_while_on_the_wire(dying: RunningBot, survivor: RunningBot) -> None:
    """Kill `dying` once its createTask is recorded as sent and kie.ai's answer is not in."""
    await eventually(lambda: on_the_wire(survivor), 10, what="createTask to be on the wire")
    await asyncio.sleep(0.2)
    kill(dying)


async def assert_delivered_once(
    survivor: RunningBot, fake_discord: FakeDiscord, interaction: object
) -> None:
    """One image in the reply, the job delivered, one unit charged."""
    await survivor.idle()
    assert images(fake_discord, interaction) == 1, "delivered once"
    job = await survivor.storage.jobs.get_job(1)
    assert job is not None and job.state is JobState.DELIVERED
    assert await survivor.storage.jobs.total_units_charged() == 1


def images(fake_discord: FakeDiscord, interaction: object) -> int:
    return sum(
        embed_title(r) == READY_TITLE
        for r in original_edits(fake_discord, interaction)  # type: ignore[arg-type]
    )


async def test_a_callback_that_outruns_create_tasks_answer_is_delivered_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(callbacks=True)
    # kie.ai makes the task at once, finishes it and calls back, and answers createTask late.
    fake_kie.fail_create_next(CreateFault(code=200, creates_task=True, delay=2.0))
    fake_kie.script_next(TaskScript(step_seconds=0.05))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})

    assert embed_title(await final_answer(fake_discord, interaction, 20)) == READY_TITLE
    await running.idle()
    assert images(fake_discord, interaction) == 1
    assert len(fake_kie.calls_to(CREATE)) == 1
    assert await running.job_states() == {"delivered": 1}
    assert await running.units_charged() == 1


async def test_a_job_whose_process_died_during_create_task_is_named_by_the_callback(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    postgres_target: PostgresTarget,
) -> None:
    dying, survivor = await two_processes(start_bot, fake_discord, postgres_target)
    survivor_url = survivor.bot.settings.public_base_url
    assert survivor_url is not None

    # kie.ai makes the task but its answer never comes back to the dying process; the task's
    # callback reaches the survivor (as a load balancer in front of both would send it).
    fake_kie.fail_create_next(CreateFault(code=200, creates_task=True, delay=60.0))
    fake_kie.script_next(
        TaskScript(
            states=["waiting"] * 8 + ["success"], step_seconds=0.5, callback_base=survivor_url
        )
    )
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})

    await kill_while_on_the_wire(dying, survivor)

    assert embed_title(await final_answer(fake_discord, interaction, 30)) == READY_TITLE
    await assert_delivered_once(survivor, fake_discord, interaction)
    assert len(fake_kie.calls_to(CREATE)) == 1, "never sent again"


async def test_a_job_whose_create_task_never_reached_kie_is_sent_again_after_the_patience(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    postgres_target: PostgresTarget,
) -> None:
    dying, survivor = await two_processes(
        start_bot,
        fake_discord,
        postgres_target,
        job_timeout=PATIENCE,  # the patience is at most the job's timeout
    )
    # The process dies with its createTask recorded as sent but not yet at kie.ai: the
    # request is held (kie.ai would make its task only a minute later, long after the test),
    # so nothing calls back.
    fake_kie.fail_create_next(CreateFault(code=200, delay=60.0))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})

    await kill_while_on_the_wire(dying, survivor)
    killed = asyncio.get_running_loop().time()

    assert embed_title(await final_answer(fake_discord, interaction, 30)) == READY_TITLE
    assert asyncio.get_running_loop().time() - killed >= PATIENCE - 1, "not sent again at once"
    await assert_delivered_once(survivor, fake_discord, interaction)
    assert len(fake_kie.created_tasks()) == 1, "one task made: the cut-off request made none"
    assert len(fake_kie.calls_to(CREATE)) == 2


async def test_a_late_callback_of_the_first_request_during_the_second_is_delivered_once(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    postgres_target: PostgresTarget,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The bet of sending again, lost: the cut-off request did reach kie.ai, and its task's
    # callback arrives while the second createTask is on the wire. The job goes on with the
    # task the callback named (the second one's image is paid and unused), not stuck.
    dying, survivor = await two_processes(
        start_bot,
        fake_discord,
        postgres_target,
        job_timeout=PATIENCE,
        request_timeout=10.0,  # the second createTask's answer takes 4 s
    )
    survivor_url = survivor.bot.settings.public_base_url
    assert survivor_url is not None
    fake_kie.fail_create_next(
        # The first: kie.ai makes the task but its answer never reaches the dying process.
        CreateFault(code=200, creates_task=True, delay=60.0),
        # The second (after the patience, about 6 s on): on the wire from then for 4 s.
        CreateFault(code=200, delay=4.0),
    )
    # The first task ends 8.5 s after it was made, in the middle of the second createTask.
    fake_kie.script_next(
        TaskScript(
            states=["waiting"] * 17 + ["success"], step_seconds=0.5, callback_base=survivor_url
        )
    )
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})

    await kill_while_on_the_wire(dying, survivor)

    assert embed_title(await final_answer(fake_discord, interaction, 40)) == READY_TITLE
    await assert_delivered_once(survivor, fake_discord, interaction)
    assert len(fake_kie.calls_to(CREATE)) == 2, "sent again once"
    first = fake_kie.created_tasks()[0]
    downloads = [c.path for c in fake_kie.calls if c.path.startswith("/files/")]
    assert downloads and all(first.task_id in path for path in downloads), "the named task's"
    # The run that sent it again goes on with the named task: no run gives up on the job.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors
