"""A server's own kie.ai key in a cluster: set through one process, it must also be the key
another process uses for that server's job once it takes the job over (a process reads the
stored keys at start, so it re-reads them before running jobs it takes over)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from bot.domain import JobState
from bot.settings import Settings
from bot.store import PostgresTarget
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import (
    ADMIN,
    ADMIN_PERMISSIONS,
    READY_TITLE,
    answer_text,
    embed_title,
    eventually,
    final_answer,
)
from tests.test_cluster import kill, start_processes

LEASE = 1.5
SECRET = "a-long-random-operator-secret-for-cluster-tests"
SERVER_KEY = "server-own-kie-key-cluster-9d41"


@pytest.fixture
def settings(settings: Settings, postgres_target: PostgresTarget) -> Settings:
    return replace(
        settings, database_url=postgres_target.url, lease_seconds=LEASE, secret_key=SECRET
    )


async def set_key(fake: FakeDiscord, key: str) -> str:
    raw = {"type": 2, "options": [{"name": "set", "type": 1, "options": []}]}
    opened = await fake.send_interaction(
        "server", {"kie-key": raw}, user_id=ADMIN, permissions=ADMIN_PERMISSIONS
    )
    await fake.wait_for_request(lambda r: r.path.endswith("/callback") and str(opened.id) in r.path)
    submitted = await fake.submit_modal(opened, {"key": key})
    return answer_text(await final_answer(fake, submitted))


async def test_a_job_taken_over_keeps_its_servers_own_key(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY, credits=500)
    # Both started before the key exists; the second gets the interactions (the newest session).
    survivor, holder = await start_processes(start_bot, fake_discord, 2)
    assert "…9d41" in await set_key(fake_discord, SERVER_KEY)

    fake_kie.script_next(TaskScript(states=["waiting"] * 8 + ["success"], step_seconds=0.5))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": "a quiet pier"})
    await fake_kie.wait_for_tasks(1, 10)
    (task,) = fake_kie.created_tasks()

    async def submitted() -> bool:
        jobs = await holder.storage.jobs.open_jobs()
        return [job.state for job in jobs] == [JobState.SUBMITTED]

    await eventually(submitted, 10, what="the job at kie.ai")  # killed mid-createTask: refunded
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
    (create,) = fake_kie.calls_to("/api/v1/jobs/createTask")
    assert create.headers["authorization"] == f"Bearer {SERVER_KEY}"
    assert fake_kie.credits == 1000, "the operator's account paid nothing"
    assert survivor.bot.jobs.accounts is not None
    assert survivor.bot.jobs.accounts.has_key(fake_discord.guild_id)
