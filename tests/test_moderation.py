"""/moderation end to end: admins set rules through commands; members meet them at /imagine."""

from __future__ import annotations

from typing import Any

import discord

from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
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
    first_answer_is_private,
    user_resolved,
)

MEMBER = 4242


async def moderate(
    fake: FakeDiscord, subcommand: str, options: dict[str, Any] | None = None, **kwargs: Any
) -> RecordedRequest:
    """Run a /moderation subcommand and return the bot's private answer."""
    return await admin_command(fake, "moderation", subcommand, options, **kwargs)


async def imagine(fake: FakeDiscord, prompt: str, **kwargs: Any) -> FakeInteraction:
    return await fake.send_interaction("imagine", {"prompt": prompt}, user_id=MEMBER, **kwargs)


async def test_a_blocked_term_is_refused_privately_in_any_spelling_and_costs_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    added = await moderate(fake_discord, "block", {"term": "gore"})
    assert "Blocked **gore**" in answer_text(added)
    assert added.json["flags"] & 64, "admin answers are private"

    refused = await imagine(fake_discord, "a scene full of G0RE")
    refusal = await final_answer(fake_discord, refused)
    assert first_answer_is_private(fake_discord, refused)
    assert "blocked: **gore**" in answer_text(refusal)
    assert "G0RE" in answer_text(refusal)
    assert fake_kie.calls_to("/api/v1/jobs/createTask") == []
    assert await running.units_charged() == 0

    async def recorded() -> bool:
        events = await running.storage.moderation.moderation_events(fake_discord.guild_id)
        return [kind for kind, _, _ in events] == ["term_added", "refused_blocked_term"]

    await eventually(recorded)  # recorded just after the member was answered


async def test_an_innocent_word_containing_a_term_is_allowed(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot()
    await moderate(fake_discord, "block", {"term": "ass"})
    final = await final_answer(fake_discord, await imagine(fake_discord, "a class of assistants"))
    assert embed_title(final) == READY_TITLE


async def test_terms_can_be_listed_and_unblocked(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot()
    await moderate(fake_discord, "block", {"term": "gore"})
    again = await moderate(fake_discord, "block", {"term": "GÖRE"})
    assert "already blocked" in answer_text(again)
    assert "gore" in answer_text(await moderate(fake_discord, "blocklist"))
    assert "allowed again" in answer_text(await moderate(fake_discord, "unblock", {"term": "gore"}))
    assert "no terms" in answer_text(await moderate(fake_discord, "blocklist"))
    final = await final_answer(fake_discord, await imagine(fake_discord, "gore"))
    assert embed_title(final) == READY_TITLE


async def test_a_banned_member_is_refused_until_unbanned(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    target = discord.Object(MEMBER)
    banned = await moderate(
        fake_discord, "ban", {"member": target, "reason": "spam"}, resolved=user_resolved(MEMBER)
    )
    assert "can no longer use the bot" in answer_text(banned)
    refusal = await final_answer(fake_discord, await imagine(fake_discord, "a quiet lake"))
    assert "can't use the image bot" in answer_text(refusal)
    assert fake_kie.calls_to("/api/v1/jobs/createTask") == []

    await moderate(fake_discord, "unban", {"member": target}, resolved=user_resolved(MEMBER))
    final = await final_answer(fake_discord, await imagine(fake_discord, "a quiet lake"))
    assert embed_title(final) == READY_TITLE
    kinds = [
        kind
        for kind, _, _ in await running.storage.moderation.moderation_events(fake_discord.guild_id)
    ]
    assert kinds == ["banned", "refused_banned", "unbanned"]


async def test_members_without_manage_server_cannot_change_anything(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    everyone = str(discord.Permissions(view_channel=True, send_messages=True).value)
    answer = await moderate(
        fake_discord, "block", {"term": "lake"}, user_id=MEMBER, permissions=everyone
    )
    assert "Only members who can manage this server" in answer_text(answer)
    assert await running.storage.moderation.blocked_terms(fake_discord.guild_id) == []


async def test_one_servers_rules_never_touch_another(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot()
    await moderate(fake_discord, "block", {"term": "lake"})
    other_guild = fake_discord.guild_id + 1
    final = await final_answer(
        fake_discord, await imagine(fake_discord, "a quiet lake", guild_id=other_guild)
    )
    assert embed_title(final) == READY_TITLE


async def test_the_audit_channel_gets_generations_and_refusals_without_pings(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    audit_channel = fake_discord.channel_id  # a channel of the server, known to the bot
    channel = {
        "id": str(audit_channel),
        "type": 0,
        "name": "audit",
        "permissions": ADMIN_PERMISSIONS,
    }
    answer = await moderate(
        fake_discord,
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit_channel)}},
        resolved={"channels": {str(audit_channel): channel}},
    )
    assert f"<#{audit_channel}>" in answer_text(answer)
    await moderate(fake_discord, "block", {"term": "gore"})
    await final_answer(fake_discord, await imagine(fake_discord, "@everyone gore"))
    await final_answer(fake_discord, await imagine(fake_discord, "a quiet lake"))
    await running.idle()

    posts = [
        r
        for r in fake_discord.requests
        if r.method == "POST" and r.path == f"/channels/{audit_channel}/messages"
    ]
    titles = [embed_title(p) for p in posts]
    assert titles == ["🚫 Term blocked", "🚫 Prompt refused", "🖼️ Image generated"]
    assert all(p.json["allowed_mentions"] == {"parse": []} for p in posts)
    generated = embed_of(posts[-1])
    assert "a quiet lake" in generated["description"]
    links = [f["value"] for f in generated["fields"] if f["name"] == "Result"]
    assert links and "/channels/" in links[0]


async def test_imagine_can_be_limited_to_some_channels(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    home = fake_discord.channel_id
    channel = {"id": str(home), "type": 0, "name": "art", "permissions": ADMIN_PERMISSIONS}
    allowed = await moderate(
        fake_discord,
        "allow-channel",
        {"channel": {"type": 7, "value": str(home)}},
        resolved={"channels": {str(home): channel}},
    )
    assert f"only in <#{home}>" in answer_text(allowed)

    elsewhere = await final_answer(
        fake_discord, await imagine(fake_discord, "a quiet lake", channel_id=home + 1)
    )
    assert f"works in <#{home}>" in answer_text(elsewhere)
    assert fake_kie.calls_to("/api/v1/jobs/createTask") == []
    here = await final_answer(fake_discord, await imagine(fake_discord, "a quiet lake"))
    assert embed_title(here) == READY_TITLE

    cleared = await moderate(
        fake_discord,
        "disallow-channel",
        {"channel": {"type": 7, "value": str(home)}},
        resolved={"channels": {str(home): channel}},
    )
    assert "every channel again" in answer_text(cleared)
    assert await running.storage.settings.allowed_channels(fake_discord.guild_id) == []
