"""Hostile members and faults: each attack the bot must withstand, as a regression test.

The README's "What the bot withstands" table lists the same attacks and what the bot does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, RecordedRequest
from tests.fakes.kie_server import FakeKie
from tests.helpers import (
    ADMIN_PERMISSIONS,
    READY_TITLE,
    admin_command,
    answer_text,
    embed_of,
    embed_title,
    eventually,
    final_answer,
)

MEMBER = 4242
PROMPT = "a quiet harbour at dawn"


async def imagine(fake: FakeDiscord, prompt: str = PROMPT, **kwargs: Any) -> RecordedRequest:
    kwargs.setdefault("user_id", MEMBER)
    interaction = await fake.send_interaction("imagine", {"prompt": prompt}, **kwargs)
    return await final_answer(fake, interaction)


async def set_audit_channel(fake: FakeDiscord) -> int:
    audit = fake.channel_id
    channel = {"id": str(audit), "type": 0, "name": "audit", "permissions": ADMIN_PERMISSIONS}
    await admin_command(
        fake,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit)}},
        resolved={"channels": {str(audit): channel}},
    )
    return audit


def channel_posts(fake: FakeDiscord, channel_id: int) -> list[RecordedRequest]:
    path = f"/channels/{channel_id}/messages"
    return [r for r in fake.requests if r.method == "POST" and r.path == path]


# --- moderation -----------------------------------------------------------------------------------


async def test_a_member_repeating_a_blocked_prompt_writes_one_post_and_one_row_not_one_each(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    audit = await set_audit_channel(fake_discord)
    await admin_command(fake_discord, "moderation", "block", {"term": "gore"})
    before = len(channel_posts(fake_discord, audit))
    for _ in range(6):
        assert "blocked: **gore**" in answer_text(await imagine(fake_discord, "so much gore"))
    today = running.bot.quota.today()

    async def counted() -> bool:
        return await running.store.refusals_on(today) == {
            fake_discord.guild_id: {"blocked_term": 6}
        }

    await eventually(counted)  # counted just after each answer went out
    events = await running.store.moderation_events(fake_discord.guild_id)
    assert [kind for kind, _, _ in events].count("refused_blocked_term") == 1
    assert len(channel_posts(fake_discord, audit)) - before == 1
    assert fake_kie.created_tasks() == []


async def test_mentioning_the_bot_with_help_gets_no_answer_anywhere(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot()
    for text in ("help", "!help", "help imagine"):
        await fake_discord.send_message(text)
    await asyncio.sleep(0.5)  # long enough for a prefix command to have answered
    assert channel_posts(fake_discord, fake_discord.channel_id) == []


async def test_links_timestamps_and_command_mentions_in_a_prompt_are_shown_inert(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot()
    prompt = (
        "free nitro at https://evil.example/login or discord.gg/scam, "
        "[click here](http://evil.example) </imagine:123> <t:1893456000:R> <#42> <:pog:99>"
    )
    final = await imagine(fake_discord, prompt)
    assert embed_title(final) == READY_TITLE
    shown = embed_of(final)["description"]
    for live in ("https://", "http://", "discord.gg/", "</", "<t:", "<#", "<:"):
        assert live not in shown, live
    assert "\\[click here]" in shown, "a masked link is escaped"
    for word in ("free nitro", "evil", "click here", "imagine:123"):
        assert word in shown.replace("\u200b", "").replace("\\", ""), word


async def test_a_role_quota_on_everyone_applies_to_every_member(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(daily_quota=5)
    everyone = fake_discord.guild_id  # @everyone shares the server's id
    await admin_command(
        fake_discord,
        "server",
        "role-quota",
        {"role": {"type": 8, "value": str(everyone)}, "units": 1},
        resolved=fake_discord.resolved_roles(everyone),
    )
    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    assert "0 of your 1 daily units left" in answer_text(await imagine(fake_discord))
    assert len(fake_kie.created_tasks()) == 1


# --- delivery and the ledger under faults ---------------------------------------------------------


async def test_a_dropped_audit_post_after_delivery_leaves_the_image_delivered_and_charged(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    audit = await set_audit_channel(fake_discord)
    fake_discord.drop_next("POST", f"/channels/{audit}/messages", count=20)
    final = await imagine(fake_discord)
    assert embed_title(final) == READY_TITLE
    await running.idle()
    assert await running.job_states() == {"delivered": 1}
    assert await running.units_charged() == 1
    originals = [r for r in fake_discord.requests if r.path.endswith("/messages/@original")]
    assert all("No image this time" not in str(r.json) for r in originals)
