"""Direct messages end to end: off by default (ALLOW_DMS), and when on, no way around any rule.

A DM interaction (`guild_id=None`) reaches the real bot from the fake Discord; what the member
sees, and what kie.ai was asked, is read off the wire.
"""

from __future__ import annotations

from typing import Any

import discord

from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import FakeKie
from tests.helpers import (
    READY_TITLE,
    admin_command,
    answer_text,
    bot_payloads,
    embed_title,
    final_answer,
    first_answer_is_private,
    is_private,
    user_resolved,
)

MEMBER = 8080
PROMPT = "a paper boat on a rainy street"
CREATE_TASK = "/api/v1/jobs/createTask"


async def dm(
    fake: FakeDiscord, name: str, options: dict[str, Any] | None = None, user_id: int = MEMBER
) -> tuple[FakeInteraction, RecordedRequest]:
    interaction = await fake.send_interaction(name, options, user_id=user_id, guild_id=None)
    return interaction, await final_answer(fake, interaction)


async def dm_imagine(
    fake: FakeDiscord, prompt: str = PROMPT, user_id: int = MEMBER
) -> tuple[FakeInteraction, RecordedRequest]:
    return await dm(fake, "imagine", {"prompt": prompt}, user_id)


async def server_imagine(fake: FakeDiscord, user_id: int = MEMBER) -> RecordedRequest:
    interaction = await fake.send_interaction("imagine", {"prompt": PROMPT}, user_id=user_id)
    return await final_answer(fake, interaction)


def only_one_private_answer(fake: FakeDiscord, interaction: FakeInteraction) -> str:
    """The interaction got exactly one answer, private and first; return its text."""
    assert first_answer_is_private(fake, interaction)
    payloads = bot_payloads(fake, interaction)
    assert len(payloads) == 1, payloads
    return str(payloads[0].get("content"))


def posts_outside_interactions(fake: FakeDiscord) -> list[RecordedRequest]:
    """Messages (and DM channels) the bot created other than as answers to an interaction."""
    return [
        r
        for r in fake.requests
        if r.method == "POST" and "/interactions/" not in r.path and "/webhooks/" not in r.path
    ]


# --- ALLOW_DMS off (the default) ------------------------------------------------------------------


async def test_imagine_in_a_dm_is_refused_privately_by_default_and_nothing_is_spent(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    interaction, answer = await dm_imagine(fake_discord)
    await running.idle()

    text = only_one_private_answer(fake_discord, interaction)
    assert "works in servers" in text
    assert "Nothing was spent" in text
    assert answer_text(answer) == text
    assert fake_kie.calls_to(CREATE_TASK) == []
    assert await running.units_charged() == 0
    assert await running.job_states() == {}
    assert posts_outside_interactions(fake_discord) == [], "nothing public, no DM message either"


async def test_quota_in_a_dm_is_refused_the_same_way_by_default(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    interaction, _ = await dm(fake_discord, "quota")
    await running.idle()

    text = only_one_private_answer(fake_discord, interaction)
    assert "works in servers" in text
    assert fake_kie.calls_to(CREATE_TASK) == []
    assert await running.job_states() == {}
    assert posts_outside_interactions(fake_discord) == []


# --- ALLOW_DMS on ---------------------------------------------------------------------------------


async def test_with_dms_allowed_imagine_in_a_dm_makes_the_image(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(allow_dms=True)
    _, final = await dm_imagine(fake_discord)

    assert embed_title(final) == READY_TITLE
    assert len(final.files) == 1
    (create,) = fake_kie.calls_to(CREATE_TASK)
    assert create.json["input"]["prompt"] == PROMPT
    assert create.json["input"]["nsfw_checker"] is True, "DMs are never age-restricted"
    assert await running.units_charged() == 1
    assert await running.job_states() == {"delivered": 1}
    (job,) = await running.storage.jobs.recent_jobs(MEMBER, None, 10)
    assert job.guild_id is None


async def test_with_dms_allowed_quota_in_a_dm_shows_what_was_used_in_dms_only(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot(allow_dms=True)  # DAILY_QUOTA is 10 in the tests
    assert embed_title(await server_imagine(fake_discord)) == READY_TITLE
    _, final = await dm_imagine(fake_discord)
    assert embed_title(final) == READY_TITLE

    _, answer = await dm(fake_discord, "quota")
    assert is_private(answer)
    assert "You have used **1** of your **10** units today; **9** left." in answer_text(answer)


async def test_the_operators_daily_maximum_applies_in_dms(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(allow_dms=True, max_member_daily=2)
    for _ in range(2):
        _, final = await dm_imagine(fake_discord)
        assert embed_title(final) == READY_TITLE

    interaction, refusal = await dm_imagine(fake_discord)
    text = only_one_private_answer(fake_discord, interaction)
    assert "Nothing was spent" in text
    assert "0 of your 2 daily units left" in text
    assert answer_text(refusal) == text
    assert len(fake_kie.calls_to(CREATE_TASK)) == 2
    assert await running.units_charged() == 2


async def test_dms_count_apart_from_the_server_so_a_member_can_spend_their_maximum_in_each(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(allow_dms=True, max_member_daily=2)
    for _ in range(2):
        assert embed_title(await server_imagine(fake_discord)) == READY_TITLE
    assert "Nothing was spent" in answer_text(await server_imagine(fake_discord))

    for _ in range(2):
        _, final = await dm_imagine(fake_discord)
        assert embed_title(final) == READY_TITLE
    _, refusal = await dm_imagine(fake_discord)
    assert "Nothing was spent" in answer_text(refusal)

    assert len(fake_kie.calls_to(CREATE_TASK)) == 4
    assert await running.units_charged() == 4
    today = running.bot.quota.today()
    assert (await running.storage.jobs.usage(MEMBER, fake_discord.guild_id, today)).used == 2
    assert (await running.storage.jobs.usage(MEMBER, None, today)).used == 2


async def test_a_member_banned_by_a_server_the_bot_is_in_is_refused_in_dms_too(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(allow_dms=True)
    banned = await admin_command(
        fake_discord,
        "moderation",
        "ban",
        {"member": discord.Object(MEMBER), "reason": "spam"},
        resolved=user_resolved(MEMBER),
    )
    assert "can no longer use the bot" in answer_text(banned)

    interaction, _ = await dm_imagine(fake_discord)
    text = only_one_private_answer(fake_discord, interaction)
    assert "You can't use the image bot." in text
    assert "Nothing was spent" in text
    assert fake_kie.calls_to(CREATE_TASK) == []
    assert await running.units_charged() == 0
    assert await running.job_states() == {}

    # Someone else, banned nowhere, still may.
    _, final = await dm_imagine(fake_discord, user_id=MEMBER + 1)
    assert embed_title(final) == READY_TITLE


async def test_a_ban_by_a_server_the_bot_is_not_in_does_not_follow_the_member_to_dms(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(allow_dms=True)
    elsewhere = fake_discord.guild_id + 1  # never sent to the bot in GUILD_CREATE
    banned = await admin_command(
        fake_discord,
        "moderation",
        "ban",
        {"member": discord.Object(MEMBER)},
        guild_id=elsewhere,
        resolved=user_resolved(MEMBER),
    )
    assert "can no longer use the bot" in answer_text(banned)

    _, final = await dm_imagine(fake_discord)
    assert embed_title(final) == READY_TITLE
    assert len(fake_kie.calls_to(CREATE_TASK)) == 1


async def test_a_term_on_the_operators_blocklist_is_refused_in_dms(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(allow_dms=True)
    assert await running.bot.moderation.add_global_term("gore")

    interaction, _ = await dm_imagine(fake_discord, "a battlefield full of gore")
    text = only_one_private_answer(fake_discord, interaction)
    assert "the bot has blocked: **gore**" in text
    assert "Nothing was spent" in text
    assert fake_kie.calls_to(CREATE_TASK) == []
    assert await running.units_charged() == 0
    assert await running.job_states() == {}

    _, final = await dm_imagine(fake_discord, "a battlefield at dawn")
    assert embed_title(final) == READY_TITLE
