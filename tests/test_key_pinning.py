"""A job keeps the kie.ai account it was sent with: a server's key removed or replaced while
its job is at kie.ai still serves that job (status checks, a restart, a takeover) until it
ends, kept sealed as "retired" meanwhile and deleted afterwards. kie.ai knows a task only under
the account that made it (the fake answers another key's status check as for an unknown task),
so asking with the server's new key, or the bot's, would refund an image that was paid for."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from bot.accounts import OPERATOR_ACCOUNT
from bot.domain import ImageRequest, Job, JobState, NewJob, RetiredKey, SealedKey, SpendLimits
from bot.keyvault import KeyVault
from bot.ratebudget import account_fingerprint
from bot.retention import HistoryRetention
from bot.settings import Settings
from bot.store import DatabaseTarget, Storage, open_storage
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    answer_text,
    embed_title,
    eventually,
    final_answer,
    original_edits,
)
from tests.test_durability import wait_for_state
from tests.test_server_keys import SECRET, SERVER_KEY, key_command, set_key

NEW_KEY = "server-second-kie-key-5b80d7c3ee90"
PROMPT = "a paper boat on a flooded street"
CREATE = "/api/v1/jobs/createTask"
STATUS = "/api/v1/jobs/recordInfo"
FLEX_1K = 14  # credits a 1K flex image costs on the fake
DOWNLOAD_URL = "/api/v1/common/download-url"
# Long enough at "generating" to change the key and restart the bot meanwhile. Its direct link
# has expired, so the download asks kie.ai for a fresh one: with the key the task was made with.
SLOW = TaskScript(
    states=["waiting", "generating", "generating", "success"],
    step_seconds=0.8,
    download_status=404,
)


@pytest.fixture
def settings(settings_on_both: Settings) -> Settings:
    """Every test here runs on both backends: the pin and the retired key are in the database."""
    return settings_on_both


def bearer(key: str) -> str:
    return f"Bearer {key}"


async def start_job(running: RunningBot, fake: FakeDiscord, fake_kie: FakeKie) -> FakeInteraction:
    """An /imagine whose task is at kie.ai (submitted), generating for a few seconds."""
    fake_kie.script_next(SLOW)
    interaction = await fake.send_interaction("imagine", {"prompt": PROMPT})
    await wait_for_state(running.storage, 1, JobState.SUBMITTED)
    return interaction


async def no_retired_keys(storage: Storage) -> bool:
    return await storage.server_keys.retired_keys() == []


def status_checks(fake_kie: FakeKie, task_id: str, since: float = 0.0) -> set[str]:
    """The keys the bot asked kie.ai about `task_id` with, after loop time `since`."""
    return {
        c.headers["authorization"]
        for c in fake_kie.calls_to(STATUS)
        if c.query.get("taskId") == task_id and c.at >= since
    }


async def assert_delivered_once_on_the_servers_account(
    running: RunningBot, fake: FakeDiscord, fake_kie: FakeKie, interaction: FakeInteraction
) -> Job:
    final = await final_answer(fake, interaction, 20)
    assert embed_title(final) == READY_TITLE
    finals = [e for e in original_edits(fake, interaction) if embed_title(e) == READY_TITLE]
    assert len(finals) == 1, "delivered once"
    assert await running.job_states() == {"delivered": 1}, "not refunded"
    assert await running.units_charged() == 1, "charged once"
    (create,) = fake_kie.calls_to(CREATE)
    assert create.headers["authorization"] == bearer(SERVER_KEY)
    fresh_links = fake_kie.calls_to(DOWNLOAD_URL)
    assert fresh_links and {c.headers["authorization"] for c in fresh_links} == {
        bearer(SERVER_KEY)
    }, "the download's fresh link too"
    assert fake_kie.accounts[SERVER_KEY].credits == 500 - FLEX_1K, "the server's account paid once"
    job = await running.storage.jobs.get_job(1)
    assert job is not None and job.kie_account == account_fingerprint(SERVER_KEY)
    assert SERVER_KEY not in job.kie_account, "a hash of the key, never the key"
    return job


async def test_a_key_removed_while_its_job_generates_still_serves_that_job(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY, credits=500)
    running = await start_bot(secret_key=SECRET, poll_interval=0.1)
    await set_key(fake_discord, SERVER_KEY)
    interaction = await start_job(running, fake_discord, fake_kie)
    (task,) = fake_kie.created_tasks()

    removed = await key_command(fake_discord, "remove")
    removed_at = fake_kie.calls[-1].at
    assert "Removed" in answer_text(removed)
    assert await running.storage.server_keys.server_keys() == [], "not the server's key any more"
    shown = await key_command(fake_discord, "show")
    assert "no kie.ai key of its own" in answer_text(shown)
    (retired,) = await running.storage.server_keys.retired_keys()
    assert retired.fingerprint == account_fingerprint(SERVER_KEY)
    assert SERVER_KEY not in retired.sealed, "kept sealed"

    await assert_delivered_once_on_the_servers_account(running, fake_discord, fake_kie, interaction)
    assert status_checks(fake_kie, task.task_id, since=removed_at) == {bearer(SERVER_KEY)}
    assert status_checks(fake_kie, task.task_id) == {bearer(SERVER_KEY)}
    assert fake_kie.credits == 1000, "the operator's account paid nothing"
    await eventually(lambda: no_retired_keys(running.storage), 5, what="the retired key deleted")

    # New images use the bot's key again.
    fake_kie.script_next(TaskScript(step_seconds=0.01))
    again = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    assert embed_title(await final_answer(fake_discord, again)) == READY_TITLE
    assert fake_kie.calls_to(CREATE)[-1].headers["authorization"] == bearer(fake_kie.api_key)
    second = await running.storage.jobs.get_job(2)
    assert second is not None and second.kie_account == OPERATOR_ACCOUNT


async def test_a_key_replaced_while_its_job_generates_still_serves_that_job(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY, credits=500)
    fake_kie.add_account(NEW_KEY, credits=500)
    running = await start_bot(secret_key=SECRET, poll_interval=0.1)
    await set_key(fake_discord, SERVER_KEY)
    interaction = await start_job(running, fake_discord, fake_kie)
    (task,) = fake_kie.created_tasks()

    assert "…ee90" in answer_text(await set_key(fake_discord, NEW_KEY))
    replaced_at = fake_kie.calls[-1].at
    assert "…ee90" in answer_text(await key_command(fake_discord, "show"))
    (retired,) = await running.storage.server_keys.retired_keys()
    assert retired.fingerprint == account_fingerprint(SERVER_KEY)

    await assert_delivered_once_on_the_servers_account(running, fake_discord, fake_kie, interaction)
    assert status_checks(fake_kie, task.task_id, since=replaced_at) == {bearer(SERVER_KEY)}
    assert fake_kie.accounts[NEW_KEY].credits == 500, "the new key paid nothing for it"
    await eventually(lambda: no_retired_keys(running.storage), 5, what="the retired key deleted")
    (current,) = await running.storage.server_keys.server_keys()
    assert current.last_four == "ee90", "the new key stays"

    fake_kie.script_next(TaskScript(step_seconds=0.01))
    again = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    assert embed_title(await final_answer(fake_discord, again)) == READY_TITLE
    assert fake_kie.calls_to(CREATE)[-1].headers["authorization"] == bearer(NEW_KEY)


async def test_a_restart_after_the_key_was_removed_keeps_the_jobs_account(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY, credits=500)
    first = await start_bot(secret_key=SECRET, poll_interval=0.1)
    await set_key(fake_discord, SERVER_KEY)
    interaction = await start_job(first, fake_discord, fake_kie)
    (task,) = fake_kie.created_tasks()
    await key_command(fake_discord, "remove")
    await first.bot.close()
    restarted_at = fake_kie.calls[-1].at

    second = await start_bot(secret_key=SECRET, poll_interval=0.1)
    await assert_delivered_once_on_the_servers_account(second, fake_discord, fake_kie, interaction)
    checks_after = status_checks(fake_kie, task.task_id, since=restarted_at)
    assert checks_after == {bearer(SERVER_KEY)}, "the resumed job asked with its own key"
    assert fake_kie.credits == 1000
    await eventually(lambda: no_retired_keys(second.storage), 5, what="the retired key deleted")


async def test_a_job_still_waiting_for_its_turn_at_kie_ai_goes_with_the_new_key(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY, credits=500)
    # One createTask per 3 s per key: the second job waits for the server key's next slot.
    running = await start_bot(secret_key=SECRET, poll_interval=0.1, submit_limit=(1, 3.0))
    await set_key(fake_discord, SERVER_KEY)
    fake_kie.script_next(TaskScript(step_seconds=0.01), TaskScript(step_seconds=0.01))
    first = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=401)
    await fake_kie.wait_for_tasks(1, 10)
    second = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=402)
    await eventually(
        lambda: any(embed_title(e).startswith("🕒") for e in original_edits(fake_discord, second)),
        5,
        what="the second job queued for kie.ai",
    )
    await key_command(fake_discord, "remove")

    assert embed_title(await final_answer(fake_discord, first, 20)) == READY_TITLE
    assert embed_title(await final_answer(fake_discord, second, 20)) == READY_TITLE
    creates = fake_kie.calls_to(CREATE)
    assert [c.headers["authorization"] for c in creates] == [
        bearer(SERVER_KEY),
        bearer(fake_kie.api_key),
    ], "nothing new went out with the removed key"
    jobs = [await running.storage.jobs.get_job(n) for n in (1, 2)]
    assert [job.kie_account if job else None for job in jobs] == [
        account_fingerprint(SERVER_KEY),
        OPERATOR_ACCOUNT,
    ]
    assert await running.job_states() == {"delivered": 2}
    await eventually(lambda: no_retired_keys(running.storage), 5, what="the retired key deleted")


async def test_a_job_whose_account_is_not_stored_any_more_is_refunded_not_sent_elsewhere(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_kie.add_account(SERVER_KEY, credits=500)
    first = await start_bot(secret_key=SECRET, poll_interval=0.1)
    await set_key(fake_discord, SERVER_KEY)
    interaction = await start_job(first, fake_discord, fake_kie)
    (task,) = fake_kie.created_tasks()
    await key_command(fake_discord, "remove")
    await first.bot.close()
    # Someone deletes the retired key by hand while the bot is stopped.
    retired = await first.storage.server_keys.retired_keys()
    assert [k.fingerprint for k in retired] == [account_fingerprint(SERVER_KEY)]
    edited: Any = first.storage.backend  # the SQL database itself, SQLite's or PostgreSQL's
    await edited.execute("DELETE FROM retired_kie_keys")
    stopped_at = fake_kie.calls[-1].at

    caplog.set_level(logging.INFO)
    second = await start_bot(secret_key=SECRET, poll_interval=0.1)
    final = await final_answer(fake_discord, interaction, 20)
    assert embed_title(final) == FAILED_TITLE
    assert await second.job_states() == {"refunded": 1}
    assert await second.units_charged() == 0
    # A status query the first bot had on the wire as it closed may land after `stopped_at`,
    # with the job's own key; what must never happen is a query with any other key.
    asked_with = status_checks(fake_kie, task.task_id, since=stopped_at)
    assert asked_with <= {bearer(SERVER_KEY)}, "no other account"
    lines = [r.getMessage() for r in caplog.records if "not stored any more" in r.getMessage()]
    assert len(lines) == 1, lines
    assert all(SERVER_KEY not in r.getMessage() for r in caplog.records)


# --- the store, on both backends -----------------------------------------------------------------


async def open_job(store: Storage, guild_id: int, account: str) -> Job:
    job = await store.jobs.reserve(
        NewJob(11, guild_id, 12, "2026-12-03", 1, ImageRequest(PROMPT, "1:1", "1K")),
        SpendLimits(10),
    )
    assert isinstance(job, Job)
    assert await store.jobs.begin_submit(job.id, account)
    return job


async def test_a_retired_key_is_kept_while_an_open_job_was_sent_with_it(
    storage_target: DatabaseTarget,
) -> None:
    store = await open_storage(storage_target)
    try:
        vault = KeyVault(SECRET)
        old = SealedKey(7, vault.seal(SERVER_KEY), "ab12", 1, 1000.0)
        new = SealedKey(7, vault.seal(NEW_KEY), "ee90", 1, 2000.0)
        name = account_fingerprint(SERVER_KEY)
        await store.server_keys.put_server_key(old)
        job = await open_job(store, 7, name)
        read = await store.jobs.get_job(job.id)
        assert read is not None and read.kie_account == name

        stale = RetiredKey(name, 7, vault.seal(SERVER_KEY), 2000.0)  # not the stored one
        assert not await store.server_keys.retire_server_key(stale, new), "changed meanwhile"
        assert await store.server_keys.server_keys() == [old]

        retired = RetiredKey(name, 7, old.sealed, 2000.0)
        assert await store.server_keys.retire_server_key(retired, new)
        assert await store.server_keys.server_keys() == [new]
        assert await store.server_keys.retired_keys() == [retired]
        assert await store.server_keys.sweep_retired_keys() == [], "its job is open"

        assert await store.jobs.mark_submitted(job.id, "task-1")
        assert await store.jobs.begin_delivery(job.id)
        assert await store.server_keys.sweep_retired_keys() == [], "still open"
        assert await store.jobs.refund(job.id, "test")
        assert await store.server_keys.sweep_retired_keys() == [name]
        assert await store.server_keys.retired_keys() == []
        assert (await store.jobs.get_job(job.id)) is not None
    finally:
        await store.close()


async def test_the_retention_pass_and_a_departed_servers_purge_drop_retired_keys(
    storage_target: DatabaseTarget,
) -> None:
    store = await open_storage(storage_target)
    try:
        vault = KeyVault(SECRET)
        for guild_id, key in ((7, SERVER_KEY), (8, NEW_KEY)):
            await store.server_keys.put_server_key(SealedKey(guild_id, vault.seal(key), "x", 1, 1))
            (stored,) = [k for k in await store.server_keys.server_keys() if k.guild_id == guild_id]
            retired = RetiredKey(account_fingerprint(key), guild_id, stored.sealed, 1.0)
            assert await store.server_keys.retire_server_key(retired, None)
        # A crash left server 7's key retired with no open job: the 6-hourly pass deletes it.
        job = await open_job(store, 8, account_fingerprint(NEW_KEY))

        async def sweep() -> int:
            return len(await store.server_keys.sweep_retired_keys())

        await HistoryRetention(store.jobs, 0, time.time, retired_keys=sweep).sweep()
        kept = await store.server_keys.retired_keys()
        assert [k.guild_id for k in kept] == [8], "the one its open job uses stays"

        # Server 8 removed the bot; 30 days later its configuration goes, retired keys too.
        assert await store.jobs.refund(job.id, "test")
        await store.departures.record_departure(8, 1.0)
        counts = await store.departures.purge_configuration(8, 2.0)
        assert counts is not None and counts["retired kie.ai keys"] == 1
        assert await store.server_keys.retired_keys() == []
    finally:
        await store.close()
