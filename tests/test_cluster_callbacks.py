"""kie.ai's callbacks in cluster mode: one public address (a load balancer) in front of every
process, so a callback often reaches a process that does not run its job. That process checks it
as always and relays "look now" through PostgreSQL NOTIFY; the process running the job asks
kie.ai at once. Two bots here share one PostgreSQL database, each with its own web server, and
the fake kie.ai calls back the one that does NOT run the job. Routine polls come every minute,
so only the relay can deliver within the tests' time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import aiohttp
import asyncpg
import pytest

from bot.domain import Job, JobState
from bot.relay import CallbackRelay
from bot.settings import Settings
from bot.store import PostgresTarget, Storage
from bot.store.postgres.wakeups import CHANNEL, PostgresWakeups, parse_job_id
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import READY_TITLE, embed_title, eventually, final_answer, original_edits

PROMPT = "a lighthouse in a storm, oil painting"
SLOW_POLLS = 60.0  # seconds between routine status polls: far beyond every wait below
QUICK = 3.0  # seconds a relayed callback may take to become a delivered image, at most


@pytest.fixture
def settings(settings: Settings, postgres_target: PostgresTarget) -> Settings:
    return replace(settings, database_url=postgres_target.url)


async def two_processes(start_bot: StartBot, fake_discord: FakeDiscord) -> list[RunningBot]:
    """Two bots with callbacks on, each with its own web server; the second gets the
    interactions (the fake Discord sends them to the newest session), so it runs the jobs."""
    bots: list[RunningBot] = []
    for _ in range(2):
        started = fake_discord.identify_count + 1
        bots.append(await start_bot(callbacks=True, callback_poll_interval=SLOW_POLLS))
        await eventually(lambda n=started: fake_discord.identify_count >= n, 10, what="IDENTIFY")
    for running in bots:
        wakeups = running.storage.wakeups
        assert isinstance(wakeups, PostgresWakeups)
        await asyncio.wait_for(wakeups.listening.wait(), 10)
    return bots


def wakeups(running: RunningBot) -> PostgresWakeups:
    channel = running.storage.wakeups
    assert isinstance(channel, PostgresWakeups)
    return channel


@pytest.fixture
async def notifications(postgres_target: PostgresTarget) -> AsyncIterator[list[str]]:
    """Every payload sent on the wake-up channel, as an outside listener sees it."""
    heard: list[str] = []
    connection = await asyncpg.connect(postgres_target.url)
    await connection.add_listener(
        CHANNEL, lambda _c, _pid, _channel, payload: heard.append(payload)
    )
    yield heard
    await connection.close()


async def submitted_job(storage: Storage) -> Job:
    async def submitted() -> bool:
        jobs = await storage.jobs.open_jobs()
        return len(jobs) == 1 and jobs[0].state is JobState.SUBMITTED

    await eventually(submitted, 10, what="the job to be submitted")
    (job,) = await storage.jobs.open_jobs()
    return job


async def assert_runs_it(running: RunningBot, job: Job) -> None:
    owner = running.bot.runner._leases.owner  # type: ignore[union-attr]
    assert await running.storage.leases.holder(job.id) == owner


async def test_a_callback_to_the_other_process_is_delivered_once_and_quickly(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, notifications: list[str]
) -> None:
    other, runner = await two_processes(start_bot, fake_discord)
    # Long enough for the runner to be watching the task when kie.ai calls back.
    fake_kie.script_next(
        TaskScript(
            states=["waiting", "success"],
            step_seconds=1.0,
            callback_base=other.settings.public_base_url,
        )
    )
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=7)
    job = await submitted_job(runner.storage)
    await assert_runs_it(runner, job)
    await eventually(lambda: len(fake_kie.callbacks_sent) == 1, 10, what="the callback")
    called_back_at = time.monotonic()
    final = await final_answer(fake_discord, interaction, QUICK)
    assert time.monotonic() - called_back_at < QUICK
    assert embed_title(final) == READY_TITLE
    ((task_id, status),) = fake_kie.callbacks_sent
    assert status == 200 and task_id == job.task_id
    # The callback reached only the other process's web server, which relayed it.
    assert other.server is not None and other.server.callbacks_accepted == 1
    assert runner.server is not None and runner.server.callbacks_accepted == 0
    assert (other.bot.relay.relayed, runner.bot.relay.heard) == (1, 1)
    assert (runner.bot.relay.relayed, other.bot.relay.heard) == (0, 0)
    # The payload is the job's id alone: no token, nothing of the callback's body.
    assert notifications == [str(job.id)]
    assert job.callback_token not in notifications[0]
    await runner.idle()
    await other.idle()
    done = await runner.storage.jobs.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 1
    assert len(fake_kie.calls_to("/api/v1/jobs/recordInfo")) == 1, "one look, after the relay"
    images = [r for r in original_edits(fake_discord, interaction) if embed_title(r) == READY_TITLE]
    assert len(images) == 1, "delivered exactly once"
    assert await runner.storage.jobs.total_units_charged() == 1
    metrics = other.bot.metrics.render().decode()
    assert 'imagine_callback_wakes_total{route="relayed"} 1.0' in metrics
    assert 'imagine_callback_wakes_total{route="heard"} 1.0' in runner.bot.metrics.render().decode()


async def test_a_repeated_callback_is_harmless(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    other, runner = await two_processes(start_bot, fake_discord)
    fake_kie.script_next(
        TaskScript(
            states=["waiting", "success"],
            step_seconds=1.0,
            callback_times=3,  # kie.ai "may call back more than once"
            callback_base=other.settings.public_base_url,
        )
    )
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=7)
    assert embed_title(await final_answer(fake_discord, interaction, 10)) == READY_TITLE
    await eventually(lambda: len(fake_kie.callbacks_sent) == 3, 10, what="three callbacks")
    await runner.idle()
    assert [status for _, status in fake_kie.callbacks_sent] == [200, 200, 200]
    images = [r for r in original_edits(fake_discord, interaction) if embed_title(r) == READY_TITLE]
    assert len(images) == 1, "delivered exactly once"
    assert await runner.storage.jobs.total_units_charged() == 1
    assert await runner.storage.jobs.count_by_state() == {JobState.DELIVERED: 1}


async def test_a_forged_callback_to_the_other_process_wakes_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, notifications: list[str]
) -> None:
    other, runner = await two_processes(start_bot, fake_discord)
    fake_kie.script_next(
        TaskScript(states=["waiting", "success"], step_seconds=30, callback_times=0)
    )
    await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=7)
    job = await submitted_job(runner.storage)
    await assert_runs_it(runner, job)
    base = other.settings.public_base_url
    good_path = f"{base}/kie/callback/{job.id}/{job.callback_token}"
    body = {"code": 200, "data": {"taskId": job.task_id, "state": "success"}}
    async with aiohttp.ClientSession() as session:
        for url, payload, status in [
            (f"{base}/kie/callback/{job.id}/guessed-token", body, 404),
            (f"{base}/kie/callback/{job.id + 1}/{job.callback_token}", body, 404),
            (good_path, {"code": 200, "data": {"taskId": "someone-elses-task"}}, 404),
            (good_path, "not json", 400),
        ]:
            data = payload if isinstance(payload, str) else None
            async with session.post(url, json=None if data else payload, data=data) as response:
                assert response.status == status, url
        await asyncio.sleep(0.5)  # a relay takes milliseconds
        assert notifications == [], "nothing relayed"
        assert fake_kie.calls_to("/api/v1/jobs/recordInfo") == [], "nobody asked kie.ai"
        assert (other.bot.relay.relayed, runner.bot.relay.heard) == (0, 0)

        # The same job's genuine callback does wake it (kie.ai says: still waiting).
        async with session.post(good_path, json=body) as response:
            assert response.status == 200
    await eventually(
        lambda: len(fake_kie.calls_to("/api/v1/jobs/recordInfo")) == 1, QUICK, what="one look"
    )
    assert notifications == [str(job.id)]
    assert await runner.storage.jobs.count_by_state() == {JobState.SUBMITTED: 1}


async def test_the_listener_reconnects_after_its_connection_is_killed(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    postgres_target: PostgresTarget,
) -> None:
    other, runner = await two_processes(start_bot, fake_discord)
    killed = [pid for pid in (wakeups(other).backend_pid, wakeups(runner).backend_pid) if pid]
    assert len(killed) == 2
    admin = await asyncpg.connect(postgres_target.url)
    try:
        for pid in killed:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    for running in (other, runner):
        await eventually(
            lambda r=running: wakeups(r).connections == 2 and wakeups(r).listening.is_set(),
            10,
            what="the listener to reconnect",
        )
        assert wakeups(running).backend_pid not in killed

    fake_kie.script_next(
        TaskScript(
            states=["waiting", "success"],
            step_seconds=1.0,
            callback_base=other.settings.public_base_url,
        )
    )
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=7)
    await eventually(lambda: len(fake_kie.callbacks_sent) == 1, 10, what="the callback")
    called_back_at = time.monotonic()
    assert embed_title(await final_answer(fake_discord, interaction, QUICK)) == READY_TITLE
    assert time.monotonic() - called_back_at < QUICK
    assert runner.bot.relay.heard == 1
    await runner.idle()
    assert len(fake_kie.calls_to("/api/v1/jobs/recordInfo")) == 1


def test_only_a_job_id_is_heard_on_the_channel() -> None:
    assert parse_job_id("42") == 42
    for payload in ("", "-1", "4.2", "42 ", "١٢", "9" * 19, "job 42"):
        assert parse_job_id(payload) is None, payload


class _Watching:
    """This process's watches, as `JobService` answers them: only `jobs` wait here."""

    def __init__(self, *jobs: int) -> None:
        self.jobs = set(jobs)
        self.woken: list[int] = []

    def wake(self, job_id: int) -> bool:
        if job_id not in self.jobs:
            return False
        self.woken.append(job_id)
        return True


class _DatabaseDown:
    """A wake-up channel whose database does not answer."""

    async def publish(self, job_id: int) -> None:
        raise OSError("connection refused")

    async def listen(self, on_wake: Callable[[int], None]) -> None:
        await asyncio.Event().wait()


async def test_a_relay_that_cannot_reach_the_database_leaves_the_job_to_its_poll(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watching = _Watching(1)
    relay = CallbackRelay(watching, _DatabaseDown())
    await relay.called_back(1)  # its own job: woken here, the database not asked
    await relay.called_back(2)  # another process's: the relay fails, quietly
    assert watching.woken == [1]
    assert relay.relayed == 0
    assert "could not relay the callback for job 2" in caplog.text


async def test_without_a_channel_a_callback_wakes_only_this_process() -> None:
    watching = _Watching(1)
    relay = CallbackRelay(watching, None)
    relay.start()  # nothing to listen to
    await relay.called_back(2)
    await relay.called_back(1)
    await relay.stop()
    assert (watching.woken, relay.relayed) == ([1], 0)
