"""A job keeps the kie.ai account it was sent with across a takeover: its server's key removed
through one process, then that process killed, the process that takes the job over asks kie.ai
about it with the key it was sent with (the retired key, read from the database)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from bot.domain import JobState
from bot.ratebudget import account_fingerprint
from bot.settings import Settings
from bot.store import PostgresTarget
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import READY_TITLE, answer_text, embed_title, eventually, final_answer
from tests.test_cluster import kill, start_processes
from tests.test_cluster_keys import LEASE, SECRET, SERVER_KEY, set_key
from tests.test_server_keys import key_command


@pytest.fixture
def settings(settings: Settings, postgres_target: PostgresTarget) -> Settings:
    return replace(
        settings, database_url=postgres_target.url, lease_seconds=LEASE, secret_key=SECRET
    )


async def test_a_job_taken_over_after_its_key_was_removed_keeps_that_key(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY, credits=500)
    survivor, holder = await start_processes(start_bot, fake_discord, 2, poll_interval=0.2)
    assert "…9d41" in await set_key(fake_discord, SERVER_KEY)

    fake_kie.script_next(
        TaskScript(states=["waiting"] * 8 + ["success"], step_seconds=0.5, download_status=404)
    )
    interaction = await fake_discord.send_interaction("imagine", {"prompt": "a quiet pier"})
    await fake_kie.wait_for_tasks(1, 10)
    (task,) = fake_kie.created_tasks()

    async def submitted() -> bool:
        jobs = await holder.storage.jobs.open_jobs()
        return [job.state for job in jobs] == [JobState.SUBMITTED]

    await eventually(submitted, 10, what="the job at kie.ai")
    assert "Removed" in answer_text(await key_command(fake_discord, "remove"))
    kill(holder)
    killed_at = time.monotonic()

    final = await final_answer(fake_discord, interaction, 20)
    assert embed_title(final) == READY_TITLE
    polls = [
        c
        for c in fake_kie.calls_to("/api/v1/jobs/recordInfo")
        if c.at >= killed_at and c.query.get("taskId") == task.task_id
    ]
    assert polls, "the survivor asked kie.ai about the task"
    assert {c.headers["authorization"] for c in polls} == {f"Bearer {SERVER_KEY}"}
    fresh = fake_kie.calls_to("/api/v1/common/download-url")
    assert fresh and {c.headers["authorization"] for c in fresh} == {f"Bearer {SERVER_KEY}"}
    assert fake_kie.accounts[SERVER_KEY].credits == 500 - 14, "its account paid, once"
    assert fake_kie.credits == 1000, "the operator's account paid nothing"
    assert await survivor.storage.jobs.total_units_charged() == 1, "not refunded"

    async def delivered() -> bool:
        job = await survivor.storage.jobs.get_job(1)
        return job is not None and job.state is JobState.DELIVERED

    await eventually(delivered, 5, what="the job marked delivered")  # just after the edit
    job = await survivor.storage.jobs.get_job(1)
    assert job is not None and job.kie_account == account_fingerprint(SERVER_KEY)

    async def forgotten() -> bool:
        return await survivor.storage.server_keys.retired_keys() == []

    await eventually(forgotten, 5, what="the retired key deleted once its job ended")
    assert await survivor.storage.server_keys.server_keys() == []
