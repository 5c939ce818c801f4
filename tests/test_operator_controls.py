"""The operator's ceilings and `/owner` controls, end to end: what no server setting can lift."""

from __future__ import annotations

from typing import Any

from bot.policy import Setting
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, RecordedRequest
from tests.fakes.kie_server import FakeKie, TaskScript
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
    history_options,
    is_private,
    nothing_else_happens,
    user_resolved,
)

MEMBER = 4242
OTHER_MEMBER = 4343
PROMPT = "a quiet harbour at dawn"


async def imagine(fake: FakeDiscord, user_id: int = MEMBER, **kwargs: Any) -> RecordedRequest:
    interaction = await fake.send_interaction(
        "imagine", {"prompt": kwargs.pop("prompt", PROMPT)}, user_id=user_id, **kwargs
    )
    return await final_answer(fake, interaction)


async def owner(
    fake: FakeDiscord, subcommand: str, options: dict[str, Any] | None = None, **kwargs: Any
) -> RecordedRequest:
    kwargs.setdefault("user_id", fake.owner_id)
    return await admin_command(fake, "owner", subcommand, options, **kwargs)


def creates(fake_kie: FakeKie) -> int:
    return len(fake_kie.calls_to("/api/v1/jobs/createTask"))


# --- ceilings -------------------------------------------------------------------------------------


async def test_a_server_quota_of_10000_yields_at_most_max_member_daily_images(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_member_daily=3)
    refused = await admin_command(fake_discord, "server", "quota", {"units": 10_000})
    assert "at most 3 units per member per day" in answer_text(refused)
    assert "Nothing changed" in answer_text(refused)
    policy = await running.storage.settings.server_policy(fake_discord.guild_id)
    assert policy.daily_quota is None, "a refused change changes nothing"

    # A value stored before the ceiling existed (or by hand) is applied as the ceiling.
    await running.storage.settings.set_policy_value(
        fake_discord.guild_id, Setting.DAILY_QUOTA, 10_000
    )
    for _ in range(3):
        assert embed_title(await imagine(fake_discord)) == READY_TITLE
    over = await imagine(fake_discord)
    assert is_private(over)
    assert "0 of your 3 daily units left" in answer_text(over)
    assert creates(fake_kie) == 3
    assert await running.units_charged() == 3


async def test_grants_and_role_quotas_cannot_pass_the_ceiling(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_member_daily=4, daily_quota=2)
    patron = await fake_discord.add_role("Patron")
    refused = await admin_command(
        fake_discord,
        "server",
        "role-quota",
        {"role": {"type": 8, "value": str(patron)}, "units": 5},
        resolved=fake_discord.resolved_roles(patron),
    )
    assert "at most 4 units per member per day" in answer_text(refused)
    assert (await running.storage.settings.server_policy(fake_discord.guild_id)).role_quotas == {}

    member = {"type": 6, "value": str(MEMBER)}
    too_much = await admin_command(
        fake_discord,
        "server",
        "grant",
        {"member": member, "units": 3},
        resolved=user_resolved(MEMBER),
    )
    assert "at most 2 more can be granted" in answer_text(too_much)
    granted = await admin_command(
        fake_discord,
        "server",
        "grant",
        {"member": member, "units": 2},
        resolved=user_resolved(MEMBER),
    )
    assert "used 0 of 4 units" in answer_text(granted)
    # A role quota stored above the ceiling (say, before it was lowered) is cut to it too.
    await running.storage.settings.set_role_quota(fake_discord.guild_id, patron, 1000)
    for _ in range(4):
        assert embed_title(await imagine(fake_discord, roles=[patron])) == READY_TITLE
    assert "0 of your 4 daily units left" in answer_text(
        await imagine(fake_discord, roles=[patron])
    )
    assert creates(fake_kie) == 4


async def test_the_server_cap_stops_a_whole_server_and_its_budget_cannot_exceed_it(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(server_daily_cap=2)
    refused = await admin_command(fake_discord, "server", "budget", {"units": 5})
    assert "caps this server at 2 units a day" in answer_text(refused)
    lower = await admin_command(fake_discord, "server", "budget", {"units": 1})
    assert is_private(lower)

    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    over_budget = await imagine(fake_discord, user_id=OTHER_MEMBER)
    assert "budget is used up (1 of 1 units spent" in answer_text(over_budget)
    await admin_command(fake_discord, "server", "budget")  # no budget: the cap still holds
    assert embed_title(await imagine(fake_discord, user_id=OTHER_MEMBER)) == READY_TITLE
    capped = await imagine(fake_discord, user_id=OTHER_MEMBER + 1)
    assert "(2 of 2 units spent" in answer_text(capped)
    # Another server has its own cap.
    elsewhere = await imagine(fake_discord, guild_id=fake_discord.guild_id + 1)
    assert embed_title(elsewhere) == READY_TITLE
    assert creates(fake_kie) == 3
    assert await running.units_charged() == 3


async def test_a_server_not_in_allowed_guild_ids_creates_no_task_and_stores_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(allowed_guild_ids=frozenset({fake_discord.guild_id}))
    stranger = fake_discord.guild_id + 1
    commands = (("imagine", {"prompt": PROMPT}), ("quota", None), ("history", history_options()))
    for name, options in commands:
        interaction = await fake_discord.send_interaction(name, options, guild_id=stranger)
        answer = await final_answer(fake_discord, interaction)
        assert first_answer_is_private(fake_discord, interaction)
        assert "This bot is not enabled for this server" in answer_text(answer)
    admin = await admin_command(fake_discord, "server", "quota", {"units": 1}, guild_id=stranger)
    assert "This bot is not enabled for this server" in answer_text(admin)
    assert creates(fake_kie) == 0
    assert await running.job_states() == {}
    assert await running.storage.moderation.refusals_on(running.bot.quota.today()) == {}
    assert (await running.storage.settings.server_policy(stranger)).daily_quota is None
    # The allowed server works as usual.
    assert embed_title(await imagine(fake_discord)) == READY_TITLE


# --- /owner ---------------------------------------------------------------------------------------


OWNER_SUBCOMMANDS = {
    "servers",
    "cap",
    "ban-user",
    "unban-user",
    "ban-server",
    "unban-server",
    "block",
    "unblock",
    "pause",
    "resume",
    "log",
}


async def test_owner_commands_exist_only_in_the_owner_guild(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    owner_guild = 777_000_000_000_000_001
    await start_bot(owner_guild_id=owner_guild)
    assert "owner" not in {c["name"] for c in fake_discord.synced_commands[None]}
    (group,) = fake_discord.synced_commands[owner_guild]
    assert group["name"] == "owner"
    assert {o["name"] for o in group["options"]} == OWNER_SUBCOMMANDS


async def test_without_owner_guild_id_there_are_no_owner_commands(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot()
    assert list(fake_discord.synced_commands) == [None]
    assert "owner" not in {c["name"] for c in fake_discord.synced_commands[None]}


async def test_only_the_applications_owner_may_use_owner_commands(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(owner_guild_id=fake_discord.guild_id)
    # A server admin of the owner guild is not the bot's owner.
    refused = await owner(fake_discord, "pause", user_id=MEMBER, permissions=ADMIN_PERMISSIONS)
    assert is_private(refused)
    assert "Only the bot's owner" in answer_text(refused)
    assert not running.bot.operator.gate.paused
    assert await running.storage.operator.owner_actions(10) == []
    assert embed_title(await imagine(fake_discord)) == READY_TITLE


async def test_a_user_banned_by_the_owner_is_refused_everywhere_and_it_is_logged(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(owner_guild_id=fake_discord.guild_id, allow_dms=True)
    member = {"user": {"type": 6, "value": str(MEMBER)}, "reason": "spam"}
    banned = await owner(fake_discord, "ban-user", member, resolved=user_resolved(MEMBER))
    assert "can no longer generate anywhere" in answer_text(banned)
    for guild in (fake_discord.guild_id, fake_discord.guild_id + 1, None):
        interaction = await fake_discord.send_interaction(
            "imagine", {"prompt": PROMPT}, user_id=MEMBER, guild_id=guild
        )
        refusal = await final_answer(fake_discord, interaction)
        assert first_answer_is_private(fake_discord, interaction)
        assert "You can't use the image bot. Nothing was spent." in answer_text(refusal)
    assert creates(fake_kie) == 0

    unbanned = await owner(
        fake_discord, "unban-user", {"user": member["user"]}, resolved=user_resolved(MEMBER)
    )
    assert "can generate again" in answer_text(unbanned)
    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    actions = await running.storage.operator.owner_actions(10)
    assert [(a.action, a.target, a.actor_id) for a in actions] == [
        ("unban-user", str(MEMBER), fake_discord.owner_id),
        ("ban-user", str(MEMBER), fake_discord.owner_id),
    ]
    assert actions[1].detail == "spam"


async def test_a_banned_server_is_refused_every_command(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(owner_guild_id=fake_discord.guild_id)
    banned_guild = fake_discord.guild_id + 5
    answer = await owner(fake_discord, "ban-server", {"server": str(banned_guild)})
    assert "can no longer use the bot" in answer_text(answer)
    refusal = await imagine(fake_discord, guild_id=banned_guild)
    assert "not available in this server" in answer_text(refusal)
    assert creates(fake_kie) == 0
    bad = await owner(fake_discord, "ban-server", {"server": "not-a-server"})
    assert "is not a server ID" in answer_text(bad)
    await owner(fake_discord, "unban-server", {"server": str(banned_guild)})
    assert embed_title(await imagine(fake_discord, guild_id=banned_guild)) == READY_TITLE


async def test_the_owners_cap_for_one_server_overrides_server_daily_cap_up_and_down(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(owner_guild_id=fake_discord.guild_id, server_daily_cap=1)
    other = fake_discord.guild_id + 1
    answer = await owner(fake_discord, "cap", {"server": str(other), "units": 2})
    assert "may now spend 2 units a day" in answer_text(answer)
    await owner(fake_discord, "cap", {"server": str(fake_discord.guild_id), "units": 0})
    # The owner guild has no cap now, the other has 2, everyone else 1.
    for _ in range(3):
        assert embed_title(await imagine(fake_discord, user_id=MEMBER)) == READY_TITLE
    for user in (MEMBER, OTHER_MEMBER):
        assert embed_title(await imagine(fake_discord, user_id=user, guild_id=other)) == READY_TITLE
    assert "(2 of 2 units spent" in answer_text(await imagine(fake_discord, guild_id=other))
    third = fake_discord.guild_id + 2
    assert embed_title(await imagine(fake_discord, guild_id=third)) == READY_TITLE
    assert "(1 of 1 units spent" in answer_text(
        await imagine(fake_discord, user_id=OTHER_MEMBER, guild_id=third)
    )
    back = await owner(fake_discord, "cap", {"server": str(other)})
    assert "back to the default cap" in answer_text(back)
    assert creates(fake_kie) == 6


async def test_a_term_the_owner_blocks_is_refused_in_every_server(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(owner_guild_id=fake_discord.guild_id)
    blocked = await owner(fake_discord, "block", {"term": "gore"})
    assert "Blocked **gore** everywhere" in answer_text(blocked)
    for guild in (fake_discord.guild_id, fake_discord.guild_id + 1):
        interaction = await fake_discord.send_interaction(
            "imagine", {"prompt": "a scene full of g.o.r.e"}, user_id=MEMBER, guild_id=guild
        )
        refusal = await final_answer(fake_discord, interaction)
        assert first_answer_is_private(fake_discord, interaction)
        assert "a term the bot has blocked: **gore**" in answer_text(refusal)
    assert creates(fake_kie) == 0
    await owner(fake_discord, "unblock", {"term": "GORE"})
    assert embed_title(await imagine(fake_discord, prompt="a scene full of gore")) == READY_TITLE


async def test_a_pause_holds_charged_jobs_before_kie_and_resume_starts_them(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(owner_guild_id=fake_discord.guild_id, max_running_per_member=1)
    fake_kie.script_next(TaskScript(states=["generating", "success"], step_seconds=0.5))
    first = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    await fake_kie.wait_for_tasks(1)
    second = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    await fake_discord.wait_for_request(
        lambda r: r.method == "PATCH" and second.token in r.path and "Waiting" in str(r.json)
    )
    paused = await owner(fake_discord, "pause", {"reason": "maintenance until 18:00"})
    assert "Generation is paused" in answer_text(paused)

    # The running image is still delivered; the waiting one is held, charged, and says why.
    assert embed_title(await final_answer(fake_discord, first)) == READY_TITLE
    await fake_discord.wait_for_request(
        lambda r: r.method == "PATCH" and second.token in r.path and "Paused" in str(r.json)
    )
    held = next(
        r
        for r in reversed(fake_discord.calls_for(second))
        if "Paused" in embed_of(r).get("title", "")
    )
    assert "maintenance until 18:00" in str(embed_of(held))
    refused = await imagine(fake_discord, user_id=OTHER_MEMBER)
    assert "paused by the bot's operator (maintenance until 18:00)" in answer_text(refused)
    await nothing_else_happens(fake_kie, within=0.3, where=lambda r: r.path.endswith("/createTask"))
    assert creates(fake_kie) == 1, "nothing new reaches kie.ai while paused"
    assert await running.storage.jobs.total_units_charged() == 2

    resumed = await owner(fake_discord, "resume")
    assert "Generation resumed" in answer_text(resumed)
    assert embed_title(await final_answer(fake_discord, second)) == READY_TITLE
    assert creates(fake_kie) == 2
    assert [a.action for a in await running.storage.operator.owner_actions(5)] == [
        "resume",
        "pause",
    ]


async def test_a_pause_outlives_a_restart(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    first = await start_bot(owner_guild_id=fake_discord.guild_id)
    await owner(fake_discord, "pause")
    await first.bot.close()
    second = await start_bot(owner_guild_id=fake_discord.guild_id)
    assert second.bot.operator.gate.paused
    assert "paused by the bot's operator" in answer_text(await imagine(fake_discord))
    assert creates(fake_kie) == 0


async def test_owner_servers_shows_spend_caps_dms_and_refusals_sorted_by_spend(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(owner_guild_id=fake_discord.guild_id, allow_dms=True, daily_quota=3)
    small, big = fake_discord.guild_id, fake_discord.guild_id + 9
    assert embed_title(await imagine(fake_discord, guild_id=small)) == READY_TITLE
    for user in (MEMBER, OTHER_MEMBER):
        assert embed_title(await imagine(fake_discord, user_id=user, guild_id=big)) == READY_TITLE
    assert embed_title(await imagine(fake_discord, guild_id=None)) == READY_TITLE
    await admin_command(fake_discord, "moderation", "block", {"term": "gore"}, guild_id=small)
    for _ in range(2):
        await imagine(fake_discord, prompt="so much gore", guild_id=small)
    today = running.bot.quota.today()

    async def counted() -> bool:  # refusals are counted just after the member was answered
        return (await running.storage.moderation.refusals_on(today)).get(small) == {
            "blocked_term": 2
        }

    await eventually(counted)

    answer = await owner(fake_discord, "servers")
    assert is_private(answer)
    fields = embed_of(answer)["fields"]
    assert [f["name"] for f in fields][:1] == [f"Server {big}"], "the biggest spender first"
    by_name = {f["name"]: f["value"] for f in fields}
    assert by_name[f"Server {big}"].startswith("today 2 of 500 · month 2 units")
    small_row = next(value for name, value in by_name.items() if f"({small})" in name)
    assert "today 1 of 500" in small_row
    assert "refused today: blocked_term ×2" in small_row
    assert by_name["Direct messages"].startswith("today 1 of 500")
    assert "Today over everything: **4 units**" in embed_of(answer)["description"]


async def test_refusals_are_private_first_answers_counted_and_audited_at_most_once_per_10_minutes(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    audit = fake_discord.channel_id
    channel = {"id": str(audit), "type": 0, "name": "audit", "permissions": ADMIN_PERMISSIONS}
    await admin_command(
        fake_discord,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit)}},
        resolved={"channels": {str(audit): channel}},
    )
    await admin_command(
        fake_discord,
        "moderation",
        "ban",
        {"member": {"type": 6, "value": str(MEMBER)}},
        resolved=user_resolved(MEMBER),
    )
    before = len(fake_discord.channel_messages.get(audit, []))
    for _ in range(5):
        interaction = await fake_discord.send_interaction(
            "imagine", {"prompt": PROMPT}, user_id=MEMBER
        )
        refusal = await final_answer(fake_discord, interaction)
        assert first_answer_is_private(fake_discord, interaction)
        assert "can't use the image bot in this server" in answer_text(refusal)
    today = running.bot.quota.today()

    async def counted() -> bool:
        return await running.storage.moderation.refusals_on(today) == {
            fake_discord.guild_id: {"banned": 5}
        }

    await eventually(counted)  # counted just after each answer went out

    def refusal_posts() -> list[dict[str, Any]]:
        posts = fake_discord.channel_messages.get(audit, [])[before:]
        return [p for p in posts if "refused" in str(p.get("embeds"))]

    # The audit post goes out after the refusal: wait for it, then for any second one.
    await eventually(lambda: len(refusal_posts()) >= 1, what="the audit post of the refusal")
    await nothing_else_happens(
        fake_discord, where=lambda r: r.path == f"/channels/{audit}/messages"
    )
    assert len(refusal_posts()) == 1, "one audit post per member and reason per 10 minutes"
    assert creates(fake_kie) == 0
    assert await running.units_charged() == 0
