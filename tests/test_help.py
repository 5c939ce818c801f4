"""/help and the welcome: what a member reads, from the live configuration, on the wire."""

from __future__ import annotations

import discord

from bot.domain import ServerPolicy
from bot.policy import PolicyView
from bot.runqueue import RunLimits
from bot.ui.server_messages import setup_checklist
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.helpers import (
    ADMIN_PERMISSIONS,
    admin_command,
    embed_of,
    final_answer,
    is_private,
    nothing_else_happens,
)

MEMBER = 7070


def field_names(answer: dict[str, object]) -> list[str]:
    return [str(f["name"]) for f in answer.get("fields", [])]  # type: ignore[union-attr]


def all_text(embed: dict[str, object]) -> str:
    parts = [str(embed.get("title", "")), str(embed.get("description", ""))]
    for item in embed.get("fields", []):  # type: ignore[union-attr]
        parts += [str(item["name"]), str(item["value"])]
    return "\n".join(parts)


async def test_help_is_private_and_quotes_this_servers_costs_and_quota(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot(cost_2k=3, daily_quota=7)
    await admin_command(fake_discord, "server", "quota", {"units": 12})
    await admin_command(fake_discord, "server", "budget", {"units": 150})
    interaction = await fake_discord.send_interaction("help", user_id=MEMBER)
    answer = await final_answer(fake_discord, interaction)
    assert is_private(answer)
    text = all_text(embed_of(answer))
    assert "1K image costs **1 unit**" in text
    assert "2K image **3 units**" in text
    assert "**12 units**" in text  # the server's quota, not the bot's 7
    assert "150 units" in text  # the server's budget
    for command in ("/quota", "/history", "/settings", "Re-roll", "Vary", "Delete"):
        assert command in text
    # An ordinary member sees no set-up checklist.
    assert "Setting up" not in text


async def test_help_shows_managers_what_is_set_and_what_is_not(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot(allow_nsfw=False)
    channel = fake_discord.channel_id
    entry = {"id": str(channel), "type": 0, "name": "image-log", "permissions": ADMIN_PERMISSIONS}
    resolved = {"channels": {str(channel): entry}}
    await admin_command(
        fake_discord,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(channel)}},
        resolved=resolved,
    )
    await admin_command(fake_discord, "server", "budget", {"units": 40})
    interaction = await fake_discord.send_interaction(
        "help", user_id=MEMBER, permissions=ADMIN_PERMISSIONS
    )
    answer = await final_answer(fake_discord, interaction)
    assert is_private(answer)
    checklist = next(
        f["value"] for f in embed_of(answer)["fields"] if f["name"].startswith("Setting up")
    )
    lines = checklist.splitlines()
    assert lines[0].startswith("✅ **Audit channel**") and f"<#{channel}>" in lines[0]
    assert lines[1].startswith("⬜ **Allowed channels**")
    assert "/moderation allow-channel" in lines[1]
    assert lines[2].startswith("⬜ **Quotas**") and "10 units" in lines[2]  # the bot's default
    assert "/server quota" in lines[2]
    assert lines[3].startswith("✅ **Budget**") and "40 units" in lines[3]
    assert lines[4].startswith("⬜ **NSFW**") and "operator" in lines[4]


async def test_help_in_direct_messages_has_no_server_checklist(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot(allow_dms=True)
    interaction = await fake_discord.send_interaction(
        "help", user_id=MEMBER, guild_id=None, permissions=ADMIN_PERMISSIONS
    )
    answer = await final_answer(fake_discord, interaction)
    assert is_private(answer)
    text = all_text(embed_of(answer))
    assert "in direct messages" in text
    assert "in this server" not in text
    assert "Setting up" not in text


# --- the welcome ---------------------------------------------------------------------------------


def posts_in(fake: FakeDiscord, channel_id: int) -> list[dict[str, object]]:
    return [
        r.json or {}
        for r in fake.requests
        if r.method == "POST" and r.path.endswith(f"/channels/{channel_id}/messages")
    ]


async def test_joining_a_server_posts_one_welcome_naming_help_and_pinging_nobody(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    await running.bot.wait_until_ready()  # a join during READY's guild stream is no join
    guild = await fake_discord.join_guild()
    await fake_discord.wait_for_request(
        lambda r: r.path.endswith(f"/channels/{guild.channel_id}/messages")
    )
    (post,) = posts_in(fake_discord, guild.channel_id)
    assert "/help" in str(post["content"])
    assert post["allowed_mentions"] == {"parse": []}
    assert not post.get("embeds")
    await nothing_else_happens(fake_discord)


async def test_the_welcome_is_not_posted_again_after_a_restart(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    await running.bot.wait_until_ready()
    guild = await fake_discord.join_guild()
    await fake_discord.wait_for_request(
        lambda r: r.path.endswith(f"/channels/{guild.channel_id}/messages")
    )
    await running.bot.close()
    # The next run knows the server from READY: no join. Then it is kicked and re-invited,
    # which is a join again: the welcome was remembered, so nothing is posted.
    running = await start_bot()
    await running.bot.wait_until_ready()
    await nothing_else_happens(fake_discord, within=0.3)
    await fake_discord.rejoin_guild(guild)
    await nothing_else_happens(fake_discord, within=0.3)
    assert len(posts_in(fake_discord, guild.channel_id)) == 1


async def test_a_gateway_reconnect_does_not_welcome_again(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    await running.bot.wait_until_ready()
    guild = await fake_discord.join_guild()
    await fake_discord.wait_for_request(
        lambda r: r.path.endswith(f"/channels/{guild.channel_id}/messages")
    )
    await fake_discord.drop_gateway()
    await fake_discord.wait_until_resumed()
    await nothing_else_happens(fake_discord, within=0.3)
    assert len(posts_in(fake_discord, guild.channel_id)) == 1


async def test_no_welcome_without_a_system_channel(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    await running.bot.wait_until_ready()
    guild = await fake_discord.join_guild(system_channel=False)
    await nothing_else_happens(fake_discord, within=0.3)
    assert posts_in(fake_discord, guild.channel_id) == []


async def test_no_welcome_where_the_bot_may_not_send_messages(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    await running.bot.wait_until_ready()
    deny = discord.Permissions(send_messages=True)
    guild = await fake_discord.join_guild(overwrites=[("bot", discord.Permissions.none(), deny)])
    await nothing_else_happens(fake_discord, within=0.3)
    assert posts_in(fake_discord, guild.channel_id) == []


async def test_no_welcome_in_a_server_the_bot_is_not_enabled_for(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot(allowed_guild_ids=frozenset({fake_discord.guild_id}))
    await running.bot.wait_until_ready()
    guild = await fake_discord.join_guild()
    await nothing_else_happens(fake_discord, within=0.3)
    assert posts_in(fake_discord, guild.channel_id) == []


def test_the_checklist_fits_an_embed_field_however_many_channels_are_allowed() -> None:
    view = PolicyView(
        policy=ServerPolicy(daily_quota=5, role_quotas={1: 3}, daily_budget=100),
        default_quota=10,
        run_limits=RunLimits(2, 20),
        member_ceiling=50,
        server_cap=500,
        nsfw_permitted=True,
        allowed_channels=[10**18 + n for n in range(200)],
        audit_channel=10**18,
        blocked_terms=0,
        recent_changes=[],
    )
    text = setup_checklist(view)
    assert len(text) <= 1024
    assert "and 190 more" in text
