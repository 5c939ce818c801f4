"""/server end to end: admins set a server's quota policy; members meet it at /imagine."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, RecordedRequest
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import (
    ADMIN,
    ADMIN_PERMISSIONS,
    FAILED_TITLE,
    READY_TITLE,
    admin_command,
    answer_text,
    bot_payloads,
    embed_of,
    embed_title,
    field,
    final_answer,
    is_private,
    nothing_else_happens,
    user_resolved,
)

MEMBER = 4242
OTHER_MEMBER = 4343
PROMPT = "a quiet harbour at dawn"


async def server(
    fake: FakeDiscord, subcommand: str, options: dict[str, Any] | None = None, **kwargs: Any
) -> RecordedRequest:
    return await admin_command(fake, "server", subcommand, options, **kwargs)


async def imagine(fake: FakeDiscord, user_id: int = MEMBER, **kwargs: Any) -> RecordedRequest:
    interaction = await fake.send_interaction(
        "imagine", {"prompt": PROMPT}, user_id=user_id, **kwargs
    )
    return await final_answer(fake, interaction)


def member_option(user_id: int) -> dict[str, Any]:
    return {"type": 6, "value": str(user_id)}


async def test_a_server_quota_applies_to_its_members_only_and_is_shown_back(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(daily_quota=5)
    answer = await server(fake_discord, "quota", {"units": 1})
    assert answer.json["flags"] & 64, "admin answers are private"
    assert field(answer, "Daily quota per member") == "1 unit · at most 50 (the bot's)"
    assert "daily quota: 1" in field(answer, "Latest changes")

    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    refusal = await imagine(fake_discord)
    assert "0 of your 1 daily units left" in answer_text(refusal)
    # Another server keeps the bot's default of 5.
    elsewhere = fake_discord.guild_id + 1
    for _ in range(2):
        assert embed_title(await imagine(fake_discord, guild_id=elsewhere)) == READY_TITLE
    assert await running.units_charged() == 3
    assert len(fake_kie.created_tasks()) == 3

    back = await server(fake_discord, "quota")  # no units: back to the bot's default
    assert field(back, "Daily quota per member") == (
        "5 units (the bot's default) · at most 50 (the bot's)"
    )
    assert embed_title(await imagine(fake_discord)) == READY_TITLE


async def test_the_highest_role_quota_applies_and_replaces_the_default(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot(daily_quota=2)
    newcomer = await fake_discord.add_role("Newcomer")
    patron = await fake_discord.add_role("Patron")
    for role, units in ((newcomer, 0), (patron, 3)):
        answer = await server(
            fake_discord,
            "role-quota",
            {"role": {"type": 8, "value": str(role)}, "units": units},
            resolved=fake_discord.resolved_roles(role),
        )
    assert f"<@&{patron}>: 3 units" in field(answer, "Role quotas (highest applies)")
    assert f"<@&{newcomer}>: 0 units" in field(answer, "Role quotas (highest applies)")
    # The log names the role: a mention would not render in the escaped change list.
    assert "role quota: Patron: 3" in field(answer, "Latest changes")

    # Only the newcomer role: its 0 replaces the default of 2.
    refused = await imagine(fake_discord, user_id=MEMBER, roles=[newcomer])
    assert "0 of your 0 daily units left" in answer_text(refused)
    # Both roles: the highest (3) applies.
    for _ in range(3):
        ready = await imagine(fake_discord, user_id=OTHER_MEMBER, roles=[newcomer, patron])
        assert embed_title(ready) == READY_TITLE
    assert "of your 3 daily units" in answer_text(
        await imagine(fake_discord, user_id=OTHER_MEMBER, roles=[newcomer, patron])
    )
    assert await running.units_charged() == 3


async def test_a_grant_and_a_reset_let_a_member_go_on_today(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot(daily_quota=1)
    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    assert "resets <t:" in answer_text(await imagine(fake_discord))

    granted = await server(
        fake_discord,
        "grant",
        {"member": member_option(MEMBER), "units": 2},
        resolved=user_resolved(MEMBER),
    )
    assert f"<@{MEMBER}> has now used 1 of 3 units today (2 left" in answer_text(granted)
    for _ in range(2):
        assert embed_title(await imagine(fake_discord)) == READY_TITLE
    assert "resets <t:" in answer_text(await imagine(fake_discord))

    reset = await server(
        fake_discord, "reset", {"member": member_option(MEMBER)}, resolved=user_resolved(MEMBER)
    )
    assert f"<@{MEMBER}> has now used 0 of 3 units today" in answer_text(reset)
    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    assert await running.units_charged() == 4, "a reset forgets usage; it refunds nothing"
    kinds = [
        kind
        for kind, _, _ in await running.storage.moderation.moderation_events(fake_discord.guild_id)
    ]
    assert kinds == ["grant", "reset"]


async def test_the_server_budget_stops_generation_for_everyone_until_tomorrow(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(daily_quota=10)
    answer = await server(fake_discord, "budget", {"units": 2})
    assert field(answer, "Server budget per day") == "2 units · the bot's cap: 500 units"
    assert embed_title(await imagine(fake_discord, user_id=MEMBER)) == READY_TITLE
    assert embed_title(await imagine(fake_discord, user_id=OTHER_MEMBER)) == READY_TITLE
    refusal = await imagine(fake_discord, user_id=4444)
    assert is_private(refusal)
    assert "daily image budget is used up (2 of 2 units spent" in answer_text(refusal)
    assert len(fake_kie.created_tasks()) == 2
    assert await running.units_charged() == 2

    quota = await fake_discord.send_interaction("quota", user_id=4444)
    assert "shared budget today: 2 of 2 units spent, 0 left" in answer_text(
        await final_answer(fake_discord, quota)
    )


async def test_a_failed_generation_gives_the_server_budget_back(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await server(fake_discord, "budget", {"units": 1})
    fake_kie.script_next(TaskScript(states=["generating", "fail"], fail_msg="nope"))
    assert embed_title(await imagine(fake_discord)) == FAILED_TITLE
    assert embed_title(await imagine(fake_discord, user_id=OTHER_MEMBER)) == READY_TITLE
    assert await running.units_charged() == 1


async def test_members_without_manage_server_cannot_change_the_policy(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    for subcommand, options in (("quota", {"units": 0}), ("budget", {"units": 0}), ("stats", {})):
        refusal = await server(fake_discord, subcommand, options, user_id=MEMBER, permissions="0")
        assert "Only members who can manage this server" in answer_text(refusal)
    assert (await running.storage.settings.server_policy(fake_discord.guild_id)).daily_quota is None
    assert await running.storage.moderation.admin_changes(fake_discord.guild_id, 10) == []


async def test_a_refused_admin_command_gets_exactly_one_private_answer(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    raw = {"type": 1, "options": []}
    interaction = await fake_discord.send_interaction(
        "server", {"stats": raw}, user_id=MEMBER, permissions="0"
    )
    await final_answer(fake_discord, interaction)
    await running.idle()
    await nothing_else_happens(fake_discord, within=0.2)  # an error handler would answer now
    payloads = bot_payloads(fake_discord, interaction)
    assert [p.get("content") for p in payloads] == [
        "Only members who can manage this server can do that."
    ]


async def test_limits_are_shown_back_and_zero_means_the_default(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot(max_running_per_member=2, max_running_per_server=20)
    answer = await server(fake_discord, "limits", {"per_member": 1, "server": 5})
    assert field(answer, "Running at once") == "1 per member · 5 in the server"
    answer = await server(fake_discord, "limits", {"server": 0})
    assert field(answer, "Running at once") == "1 per member · 20 in the server"


def dms_to(fake: FakeDiscord, user_id: int, since: int = 0) -> list[RecordedRequest]:
    path = f"/channels/{fake.dm_channel_id(user_id)}/messages"
    return [r for r in fake.requests[since:] if r.method == "POST" and r.path == path]


async def test_credits_show_the_servers_own_spend_not_the_operators_balance(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(callbacks=True)
    fake_kie.credits = 5000
    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    await fake_discord.wait_for_request(lambda r: r.method == "PATCH")  # delivered
    answer = await server(fake_discord, "credits")
    text = answer_text(answer)
    assert "credits** left" not in text, "the balance is the operator's"
    assert "spent **1 unit** today and **1 unit** this month" in text
    (task,) = fake_kie.created_tasks()
    # The cost kie.ai reported in its callback, or that it did not report one yet.
    assert f"this month: {task.cost}" in text or "did not report" in text


async def test_credits_show_the_balance_when_the_operator_shares_it_and_alert_only_them(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(low_credits_warning=100, show_credits_to_servers=True)
    fake_kie.credits = 5000
    healthy = await server(fake_discord, "credits")
    assert "**5,000 credits** left" in answer_text(healthy)
    assert "below the warning level" not in answer_text(healthy)

    fake_kie.credits = 42
    low = await server(fake_discord, "credits")
    assert "**42 credits** left" in answer_text(low)
    assert "below the warning level of 100. The bot's operator has been alerted." in answer_text(
        low
    )
    (warning,) = dms_to(fake_discord, fake_discord.owner_id)
    assert "running low: **42 credits**" in answer_text(warning)
    assert warning.json["allowed_mentions"]["parse"] == []
    assert dms_to(fake_discord, fake_discord.guild_owner_id) == [], "not the server's owner"

    # Once an hour, not on every look.
    before = len(fake_discord.requests)
    await server(fake_discord, "credits")
    assert dms_to(fake_discord, fake_discord.owner_id, before) == []


async def test_a_job_that_runs_out_of_credits_alerts_the_operator_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(low_credits_warning=100)
    fake_kie.credits = 3  # less than one image costs
    failures = await asyncio.gather(*(imagine(fake_discord, user_id=MEMBER + n) for n in range(3)))
    for failed in failures:
        assert embed_title(failed) == FAILED_TITLE
        assert "The bot's operator has been alerted." in field(failed, "What happened")
    await running.idle()
    (alert,) = dms_to(fake_discord, fake_discord.owner_id)
    assert "out of credits" in answer_text(alert)
    assert dms_to(fake_discord, fake_discord.guild_owner_id) == []
    assert await running.units_charged() == 0


async def test_stats_count_today_and_the_week_with_top_members_and_a_chart(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot()
    for _ in range(2):
        assert embed_title(await imagine(fake_discord, user_id=MEMBER)) == READY_TITLE
    fake_kie.script_next(TaskScript(states=["generating", "fail"], fail_msg="nope"))
    assert embed_title(await imagine(fake_discord, user_id=OTHER_MEMBER)) == FAILED_TITLE
    assert embed_title(await imagine(fake_discord, user_id=OTHER_MEMBER)) == READY_TITLE
    # Another server's images are not this server's statistics.
    await imagine(fake_discord, user_id=MEMBER, guild_id=fake_discord.guild_id + 1)

    stats = await server(fake_discord, "stats")
    assert field(stats, "Today") == "3 made · 1 failed (refunded) · 3 units spent"
    assert field(stats, "Last 7 days") == "3 made · 1 failed (refunded) · 3 units spent"
    top = field(stats, "Top members (7 days)").splitlines()
    assert top == [f"1. <@{MEMBER}>: 2 made, 2 units", f"2. <@{OTHER_MEMBER}>: 1 made, 1 unit"]
    assert embed_of(stats)["image"]["url"] == "attachment://stats.png"
    (chart,) = stats.files
    assert chart.filename == "stats.png" and chart.data.startswith(b"\x89PNG\r\n\x1a\n")


async def test_policy_changes_are_posted_to_the_audit_channel_without_pings(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot()
    audit = fake_discord.channel_id
    channel = {"id": str(audit), "type": 0, "name": "audit", "permissions": ADMIN_PERMISSIONS}
    await admin_command(
        fake_discord,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit)}},
        resolved={"channels": {str(audit): channel}},
    )
    await server(fake_discord, "quota", {"units": 3})
    await server(
        fake_discord,
        "grant",
        {"member": member_option(MEMBER), "units": 2},
        resolved=user_resolved(MEMBER),
    )
    # The grant is posted after the admin's answer: wait for it.
    await fake_discord.wait_for_request(
        lambda r: r.path == f"/channels/{audit}/messages" and embed_title(r) == "🎁 Units granted"
    )
    posts = [
        r
        for r in fake_discord.requests
        if r.method == "POST" and r.path == f"/channels/{audit}/messages"
    ]
    assert [embed_title(p) for p in posts] == ["⚙️ Setting changed", "🎁 Units granted"]
    assert field(posts[0], "Details") == "daily quota: 3"
    assert field(posts[1], "Member") == f"<@{MEMBER}>"
    assert field(posts[1], "By") == f"<@{ADMIN}>"
    assert all(p.json["allowed_mentions"] == {"parse": []} for p in posts)
