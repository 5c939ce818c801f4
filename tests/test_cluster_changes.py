"""Rules kept in memory reach every process sharing the database (`bot/changes.py`): a ban,
a pause, a blocked term or a server's own kie.ai key set through one process holds in the
others within a second or so, not at their next restart. Two bots on one PostgreSQL database
in one test process, as in tests/test_cluster.py; the change is made through the first bot's
core (what its `/owner` or `/server` command calls) and seen on the wire of the second."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.settings import Settings
from bot.store import PostgresTarget
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie
from tests.helpers import (
    READY_TITLE,
    answer_text,
    embed_title,
    eventually,
    final_answer,
    first_answer_is_private,
)
from tests.test_cluster import start_processes

PROMPT = "a lighthouse in a storm, oil painting"
CREATE = "/api/v1/jobs/createTask"
MEMBER = 4242
OWNER = 1
SECRET = "a-long-random-operator-secret-for-tests"
SERVER_KEY = "server-own-kie-key-7c2e9f41ab12"
SEEN_WITHIN = 10.0  # seconds: a look every second, on a shared and busy machine


@pytest.fixture
def settings(settings: Settings, postgres_target: PostgresTarget) -> Settings:
    return replace(settings, database_url=postgres_target.url, lease_seconds=3.0)


async def two_processes(
    start_bot: StartBot, fake_discord: FakeDiscord, **overrides: object
) -> tuple[RunningBot, RunningBot]:
    """The first changes rules; the second gets the interactions."""
    changer, serving = await start_processes(start_bot, fake_discord, 2, **overrides)
    return changer, serving


def creates(fake_kie: FakeKie) -> int:
    return len(fake_kie.calls_to(CREATE))


async def imagine(fake_discord: FakeDiscord, user_id: int = MEMBER) -> object:
    return await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=user_id)


async def test_a_ban_made_through_one_process_holds_in_the_others(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    changer, serving = await two_processes(start_bot, fake_discord)
    assert await serving.bot.operator.user_banned(MEMBER) is False  # read (and kept) before
    await changer.bot.operator.ban_user(OWNER, MEMBER, "spam")

    await eventually(
        lambda: serving.bot.operator.user_banned(MEMBER), SEEN_WITHIN, what="the ban to arrive"
    )
    interaction = await imagine(fake_discord)
    refusal = await final_answer(fake_discord, interaction)
    assert first_answer_is_private(fake_discord, interaction)
    assert "You can't use the image bot. Nothing was spent." in answer_text(refusal)
    assert creates(fake_kie) == 0
    assert await serving.storage.jobs.total_units_charged() == 0

    await changer.bot.operator.unban_user(OWNER, MEMBER)

    async def lifted() -> bool:
        return not await serving.bot.operator.user_banned(MEMBER)

    await eventually(lifted, SEEN_WITHIN, what="the unban to arrive")
    assert embed_title(await final_answer(fake_discord, await imagine(fake_discord))) == (
        READY_TITLE
    )


async def test_a_pause_made_through_one_process_holds_every_process_until_resumed(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    changer, serving = await two_processes(start_bot, fake_discord)
    await changer.bot.operator.pause(OWNER, "checking the bill")
    await eventually(
        lambda: serving.bot.operator.gate.paused, SEEN_WITHIN, what="the pause to arrive"
    )
    interaction = await imagine(fake_discord)
    refused = await final_answer(fake_discord, interaction)
    assert first_answer_is_private(fake_discord, interaction)
    assert "paused by the bot's operator (checking the bill)" in answer_text(refused)
    assert creates(fake_kie) == 0, "nothing reaches kie.ai while paused, whichever process"
    assert await serving.storage.jobs.total_units_charged() == 0

    await changer.bot.operator.resume(OWNER)
    await eventually(
        lambda: not serving.bot.operator.gate.paused, SEEN_WITHIN, what="the resume to arrive"
    )
    assert embed_title(await final_answer(fake_discord, await imagine(fake_discord))) == (
        READY_TITLE
    )
    assert creates(fake_kie) == 1


async def test_a_term_blocked_through_one_process_is_refused_by_the_others(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    changer, serving = await two_processes(start_bot, fake_discord)
    guild = fake_discord.guild_id
    assert await serving.bot.moderation.terms(guild) == []  # read (and kept) before
    assert await changer.bot.moderation.add_term(guild, "lighthouse", OWNER)

    async def arrived() -> bool:
        return await serving.bot.moderation.terms(guild) == ["lighthouse"]

    await eventually(arrived, SEEN_WITHIN, what="the blocked term to arrive")
    interaction = await imagine(fake_discord)
    await final_answer(fake_discord, interaction)
    assert first_answer_is_private(fake_discord, interaction)
    assert creates(fake_kie) == 0
    assert await serving.storage.jobs.total_units_charged() == 0


async def test_an_audit_channel_set_through_one_process_gets_the_others_generations(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    changer, serving = await two_processes(start_bot, fake_discord)
    guild = fake_discord.guild_id
    audit = fake_discord.channel_id
    assert await serving.bot.moderation.audit_channel(guild) is None  # read (and kept) before
    await changer.bot.moderation.set_audit_channel(guild, audit, OWNER)

    async def arrived() -> bool:
        return await serving.bot.moderation.audit_channel(guild) == audit

    await eventually(arrived, SEEN_WITHIN, what="the audit channel to arrive")
    assert embed_title(await final_answer(fake_discord, await imagine(fake_discord))) == (
        READY_TITLE
    )

    def audited() -> bool:
        return any(
            r.method == "POST"
            and r.path == f"/channels/{audit}/messages"
            and embed_title(r) == "🖼️ Image generated"
            for r in fake_discord.requests
        )

    await eventually(audited, SEEN_WITHIN, what="the generation in the audit channel")


async def test_a_server_key_set_through_one_process_pays_for_that_servers_jobs_everywhere(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY, credits=321)
    changer, serving = await two_processes(start_bot, fake_discord, secret_key=SECRET)
    guild = fake_discord.guild_id
    accounts = serving.bot.jobs_accounts()
    await changer.bot.jobs_accounts().save(guild, SERVER_KEY, OWNER)

    await eventually(lambda: accounts.has_key(guild), SEEN_WITHIN, what="the key to arrive")
    assert embed_title(await final_answer(fake_discord, await imagine(fake_discord))) == (
        READY_TITLE
    )
    (create,) = fake_kie.calls_to(CREATE)
    assert create.headers["authorization"] == f"Bearer {SERVER_KEY}", "the server's account paid"

    assert await changer.bot.jobs_accounts().remove(guild)
    await eventually(lambda: not accounts.has_key(guild), SEEN_WITHIN, what="the removal")
    assert embed_title(await final_answer(fake_discord, await imagine(fake_discord))) == (
        READY_TITLE
    )
    assert fake_kie.calls_to(CREATE)[-1].headers["authorization"] != f"Bearer {SERVER_KEY}"
