"""Several bot processes on one PostgreSQL database (cluster mode): each job leased to one
process, taken over when that process dies, delivered once; slash commands synced by one
process; and the sharded client. Two bots run here in one test process, each with its own
connection pool to the same database, as two processes would."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from bot.domain import JobState
from bot.settings import Settings, SettingsError, load_settings
from bot.store import PostgresTarget
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import READY_TITLE, embed_title, eventually, final_answer, original_edits

PROMPT = "a lighthouse in a storm, oil painting"
LEASE = 1.5  # seconds; renewed every 0.5


@pytest.fixture
def settings(settings: Settings, postgres_target: PostgresTarget) -> Settings:
    return replace(settings, database_url=postgres_target.url, lease_seconds=LEASE)


async def start_processes(
    start_bot: StartBot, fake_discord: FakeDiscord, count: int, **overrides: object
) -> list[RunningBot]:
    """Start `count` bots one after another, each connected (so done with its start-up: the
    command sync and the takeover come before the gateway); the last gets the interactions."""
    bots: list[RunningBot] = []
    for _ in range(count):
        started = fake_discord.identify_count + 1
        bots.append(await start_bot(**overrides))
        await eventually(
            lambda n=started: fake_discord.identify_count >= n,
            10,
            what="IDENTIFY",
        )
    return bots


def kill(running: RunningBot) -> None:
    """What `kill -9` leaves behind, in-process: the bot's lease keeper and job tasks stop
    without a word to the database (no release, no state change); its leases stay as they
    were until they run out."""
    owner = running.bot.runner._leases.owner  # type: ignore[union-attr]
    for task in asyncio.all_tasks():
        if task.get_name() == f"job-leases:{owner}":
            task.cancel()
    for task in list(running.bot.runner._running):
        task.cancel()
    running.bot.runner.accepting = False  # a dead process takes no new work either


async def test_a_job_whose_process_dies_is_taken_over_and_delivered_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    first = await start_bot()
    fake_kie.script_next(TaskScript(states=["waiting"] * 6 + ["success"], step_seconds=0.5))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=7)
    await fake_kie.wait_for_tasks(1, 10)
    (job,) = await first.storage.jobs.open_jobs()
    owner = first.bot.runner._leases.owner  # type: ignore[union-attr]
    assert await first.storage.leases.holder(job.id) == owner

    # Started while the first still holds the lease: not taken.
    (second,) = await start_processes(start_bot, fake_discord, 1)
    assert await second.storage.leases.holder(job.id) == owner
    await asyncio.sleep(LEASE)  # the first keeps renewing it
    assert await second.storage.leases.holder(job.id) == owner
    kill(first)
    killed_at = time.monotonic()

    final = await final_answer(fake_discord, interaction, 20)
    taken_after = time.monotonic() - killed_at
    assert embed_title(final) == READY_TITLE
    # Taken over once the lease ran out (plus at most one renewal round), not before.
    assert taken_after < LEASE + LEASE / 3 + 5
    await second.idle()
    done = await second.storage.jobs.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 1, "never submitted twice"
    images = [r for r in original_edits(fake_discord, interaction) if embed_title(r) == READY_TITLE]
    assert len(images) == 1, "delivered exactly once"
    assert await second.storage.jobs.total_units_charged() == 1
    assert await second.storage.leases.holder(job.id) is None, "released when it ended"


async def test_a_job_is_run_by_one_process_however_many_share_the_database(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    bots = await start_processes(start_bot, fake_discord, 3)
    fake_kie.script_next(*(TaskScript(step_seconds=0.3) for _ in range(4)))
    interactions = [
        await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=100 + n)
        for n in range(4)
    ]
    for interaction in interactions:
        assert embed_title(await final_answer(fake_discord, interaction, 20)) == READY_TITLE
    await asyncio.sleep(LEASE)  # a takeover round or two by every process
    for running in bots:
        await running.idle()
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 4
    for interaction in interactions:
        finals = [
            r for r in original_edits(fake_discord, interaction) if embed_title(r) == READY_TITLE
        ]
        assert len(finals) == 1


async def test_a_clean_stop_hands_its_jobs_over_at_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    # A takeover would take a minute.
    first, second = await start_processes(start_bot, fake_discord, 2, lease_seconds=60.0)
    fake_kie.script_next(TaskScript(states=["waiting"] * 4 + ["success"], step_seconds=0.5))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    await fake_kie.wait_for_tasks(1, 10)
    (job,) = await second.storage.jobs.open_jobs()
    holder = await second.storage.leases.holder(job.id)
    assert holder == second.bot.runner._leases.owner  # type: ignore[union-attr]
    await second.bot.close()  # released on the way out
    assert await first.storage.leases.holder(job.id) is None
    # The next takeover round of the first (every 20 s here) would find it; a restart at once:
    (third,) = await start_processes(start_bot, fake_discord, 1, lease_seconds=60.0)
    final = await final_answer(fake_discord, interaction, 20)
    assert embed_title(final) == READY_TITLE
    await third.idle()
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 1


async def test_slash_commands_are_synced_by_one_process(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    bots = await start_processes(start_bot, fake_discord, 3)
    assert fake_discord.command_puts == 1, "the first synced; the others found it current"
    fps = [running.bot.command_fingerprint(None) for running in bots]
    assert len(set(fps)) == 1, fps
    # As when a new version starts on every process at once: nothing stored matches yet.
    scope = f"commands:{bots[0].bot.application_id}:global"
    await bots[0].storage.meta.delete(scope)
    await asyncio.gather(*(running.bot.sync_commands() for running in bots))
    assert fake_discord.command_puts == 2, "one process synced the new definitions"


async def test_a_sharded_bot_serves_imagine(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(shard_count=1)
    assert running.bot.shard_count == 1 and running.bot.shards.keys() == {0}
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    await eventually(lambda: not running.bot.running_jobs, 10, what="the job to end")


BASE = {"DISCORD_TOKEN": "t", "KIE_API_KEY": "k"}


def test_shard_settings_are_read_and_checked() -> None:
    assert load_settings(BASE).shard_count is None
    settings = load_settings({**BASE, "SHARD_COUNT": "4", "SHARD_IDS": "2, 0"})
    assert (settings.shard_count, settings.shard_ids) == (4, (0, 2))
    with pytest.raises(SettingsError, match="SHARD_IDS needs SHARD_COUNT"):
        load_settings({**BASE, "SHARD_IDS": "0"})
    with pytest.raises(SettingsError, match="below SHARD_COUNT"):
        load_settings({**BASE, "SHARD_COUNT": "2", "SHARD_IDS": "0,2"})
    with pytest.raises(SettingsError, match="SHARD_IDS must be shard numbers"):
        load_settings({**BASE, "SHARD_COUNT": "2", "SHARD_IDS": "one"})
    assert load_settings({**BASE, "LEASE_SECONDS": "10"}).lease_seconds == 10.0
