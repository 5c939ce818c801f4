"""Alerts for the bot's operator: problems with the kie.ai account reach the operator once, and
members are told the operator was alerted only when that is true.

The real bot runs against the fake Discord and the fake kie.ai; every assertion is on what
crossed the wire (DMs, channel posts, interaction answers, kie.ai calls).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartBot, free_port
from tests.fakes.discord_server import DEFAULT_OWNER_ID, FakeDiscord, RecordedRequest
from tests.fakes.kie_server import CreateFault, FakeKie
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    answer_text,
    bot_environment,
    bot_process,
    embed_title,
    field,
    final_answer,
    first_answer_is_private,
    nothing_else_happens,
)

MEMBER = 4242
PROMPT = "a quiet harbour at dawn"
ALERTED = "The bot's operator has been alerted."
TELL_ADMIN = "Please tell a server admin."
CREATE = "/api/v1/jobs/createTask"
CREDIT = "/api/v1/chat/credit"
OPEN_DM = "/users/@me/channels"
TEAM = [DEFAULT_OWNER_ID, 1_300_000_000_000_000_701, 1_300_000_000_000_000_702]


@pytest.fixture
async def fake_discord(request: pytest.FixtureRequest) -> AsyncIterator[FakeDiscord]:
    """The conftest fake Discord, or (parametrized indirectly with member ids) one whose
    application is owned by a team."""
    fake = FakeDiscord(team_member_ids=getattr(request, "param", None))
    await fake.start()
    yield fake
    await fake.stop()


# --- reading the wire -----------------------------------------------------------------------------


async def imagine(fake: FakeDiscord, user_id: int = MEMBER, **kwargs: Any) -> RecordedRequest:
    interaction = await fake.send_interaction(
        "imagine", {"prompt": PROMPT}, user_id=user_id, **kwargs
    )
    return await final_answer(fake, interaction)


def dms_to(fake: FakeDiscord, user_id: int, since: int = 0) -> list[RecordedRequest]:
    path = f"/channels/{fake.dm_channel_id(user_id)}/messages"
    return [r for r in fake.requests[since:] if r.method == "POST" and r.path == path]


def posts_to(fake: FakeDiscord, channel_id: int, since: int = 0) -> list[RecordedRequest]:
    path = f"/channels/{channel_id}/messages"
    return [r for r in fake.requests[since:] if r.method == "POST" and r.path == path]


def dm_openings(fake: FakeDiscord, since: int = 0) -> list[RecordedRequest]:
    return [r for r in fake.requests[since:] if r.method == "POST" and r.path.endswith(OPEN_DM)]


def all_dms(fake: FakeDiscord) -> list[RecordedRequest]:
    """Every message the bot posted to any DM channel."""
    users = [int(r.json["recipient_id"]) for r in dm_openings(fake) if isinstance(r.json, dict)]
    return [dm for user in set(users) for dm in dms_to(fake, user)]


def what_happened(answer: RecordedRequest) -> str:
    return field(answer, "What happened")


def is_alert(request: RecordedRequest) -> bool:
    """How an alert goes out: a DM channel opened, or a message posted to a channel."""
    return request.method == "POST" and (
        request.path == "/users/@me/channels" or request.path.startswith("/channels/")
    )


async def no_more_alerts(fake: FakeDiscord) -> None:
    """Nothing more that looks like an alert (a second one would go out within milliseconds of
    the first)."""
    await nothing_else_happens(fake, within=0.3, where=is_alert)


# --- jobs that fail on the operator's account -----------------------------------------------------


@pytest.mark.parametrize(
    "how", ["createTask answers 402", "createTask answers 433", "the account is empty"]
)
async def test_a_402_during_jobs_alerts_the_owner_once_and_every_member_reads_so(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, how: str
) -> None:
    running = await start_bot(low_credits_warning=100)
    if how == "the account is empty":
        fake_kie.credits = 3  # less than one image costs: kie.ai answers 402 by itself
    else:
        code = 433 if "433" in how else 402  # 433: a sub-key's spending cap
        fake_kie.fail_create_next(*(CreateFault(code) for _ in range(3)))
    members = [MEMBER, MEMBER + 1, MEMBER + 2]
    failures = await asyncio.gather(*(imagine(fake_discord, user_id=m) for m in members))
    for failed in failures:
        assert embed_title(failed) == FAILED_TITLE
        assert "out of credits" in what_happened(failed)
        assert ALERTED in what_happened(failed)
        assert TELL_ADMIN not in what_happened(failed)
        assert field(failed, "Quota").startswith("Your 1 unit went back. 10 of 10 left today.")
    await running.idle()
    await no_more_alerts(fake_discord)
    assert len(fake_kie.calls_to(CREATE)) == 3
    # One alert, to the application's owner only; a low balance right after it says nothing
    # new and is not sent as a second alert.
    (alert,) = dms_to(fake_discord, fake_discord.owner_id)
    assert "out of credits" in answer_text(alert)
    assert alert.json["allowed_mentions"]["parse"] == []
    assert dms_to(fake_discord, fake_discord.guild_owner_id) == [], "not the server's owner"
    assert all_dms(fake_discord) == [alert]
    assert await running.units_charged() == 0


async def test_a_401_posts_one_alert_to_the_ops_channel_naming_the_key_and_no_dm(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    ops = fake_discord.add_channel("ops")
    running = await start_bot(ops_channel_id=ops)
    fake_kie.fail_create_next(CreateFault(401), CreateFault(401))

    first = await imagine(fake_discord)
    assert embed_title(first) == FAILED_TITLE
    assert "API key was refused" in what_happened(first)
    assert ALERTED in what_happened(first)
    (alert,) = posts_to(fake_discord, ops)
    text = answer_text(alert)
    assert "KIE_API_KEY" in text
    assert fake_kie.api_key not in text, "the key itself is never posted"
    assert alert.json["allowed_mentions"]["parse"] == []
    assert dm_openings(fake_discord) == [], "the ops channel, not DMs"

    # Within the hour: no second post, and the member is still told the truth.
    before = len(fake_discord.requests)
    second = await imagine(fake_discord, user_id=MEMBER + 1)
    assert embed_title(second) == FAILED_TITLE
    assert ALERTED in what_happened(second)
    await running.idle()
    await no_more_alerts(fake_discord)
    assert posts_to(fake_discord, ops, before) == []
    assert dm_openings(fake_discord) == []
    assert len(fake_kie.calls_to(CREATE)) == 2
    assert await running.units_charged() == 0


async def test_an_alert_within_the_hour_is_not_repeated_after_a_restart(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    first = await start_bot()
    fake_kie.fail_create_next(CreateFault(401))
    assert ALERTED in what_happened(await imagine(fake_discord))
    await first.idle()
    assert len(dms_to(fake_discord, fake_discord.owner_id)) == 1
    await first.bot.close()

    second = await start_bot()  # the same database: a crash loop must not repeat the alert
    fake_kie.fail_create_next(CreateFault(401))
    again = await imagine(fake_discord, user_id=MEMBER + 1)
    assert embed_title(again) == FAILED_TITLE
    assert ALERTED in what_happened(again)
    await second.idle()
    await no_more_alerts(fake_discord)
    assert len(dms_to(fake_discord, fake_discord.owner_id)) == 1


async def test_a_505_alerts_the_owner_too(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    fake_kie.fail_create_next(CreateFault(505))
    failed = await imagine(fake_discord)
    assert embed_title(failed) == FAILED_TITLE
    assert "switched off" in what_happened(failed)
    assert ALERTED in what_happened(failed)
    assert field(failed, "Quota").startswith("Your 1 unit went back.")
    await running.idle()
    await no_more_alerts(fake_discord)
    (alert,) = dms_to(fake_discord, fake_discord.owner_id)
    assert "505" in answer_text(alert)
    assert dms_to(fake_discord, fake_discord.guild_owner_id) == []
    assert await running.units_charged() == 0


async def test_an_alert_that_reaches_nobody_tells_members_to_tell_an_admin(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    ops = fake_discord.add_channel("ops")
    running = await start_bot(ops_channel_id=ops)
    # The ops channel refuses the post (the bot lost access) and the owner's DMs are closed.
    fake_discord.fail_next("POST", f"/channels/{ops}/messages", status=403, code=50001, count=50)
    fake_discord.fail_next("POST", OPEN_DM, status=403, code=50007, count=50)
    fake_kie.fail_create_next(CreateFault(402), CreateFault(402))

    for member in (MEMBER, MEMBER + 1):
        failed = await imagine(fake_discord, user_id=member)
        assert embed_title(failed) == FAILED_TITLE
        assert "out of credits" in what_happened(failed)
        assert TELL_ADMIN in what_happened(failed)
        assert "has been alerted" not in what_happened(failed)
        assert field(failed, "Quota").startswith("Your 1 unit went back.")
    await running.idle()
    assert posts_to(fake_discord, ops), "the ops channel was tried"
    assert dm_openings(fake_discord), "then the owner's DMs"
    assert fake_discord.channel_messages.get(ops, []) == []
    assert fake_discord.channel_messages.get(fake_discord.dm_channel_id(fake_discord.owner_id)) in (
        None,
        [],
    )
    assert await running.units_charged() == 0


async def test_an_ops_channel_that_refuses_the_post_falls_back_to_the_owners_dms(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    ops = fake_discord.add_channel("ops")
    running = await start_bot(ops_channel_id=ops)
    fake_discord.fail_next("POST", f"/channels/{ops}/messages", status=403, code=50001, count=50)
    fake_kie.fail_create_next(CreateFault(401))
    failed = await imagine(fake_discord)
    assert ALERTED in what_happened(failed)
    await running.idle()
    await no_more_alerts(fake_discord)
    (alert,) = dms_to(fake_discord, fake_discord.owner_id)
    assert "KIE_API_KEY" in answer_text(alert)
    assert dms_to(fake_discord, fake_discord.guild_owner_id) == []


@pytest.mark.parametrize("fake_discord", [TEAM], indirect=True, ids=["team-owned"])
async def test_a_team_owned_application_alerts_every_team_member_by_dm(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    fake_kie.fail_create_next(CreateFault(402))
    failed = await imagine(fake_discord)
    assert ALERTED in what_happened(failed)
    await running.idle()
    await no_more_alerts(fake_discord)
    for member in TEAM:
        (alert,) = dms_to(fake_discord, member)
        assert "out of credits" in answer_text(alert)
    assert dms_to(fake_discord, fake_discord.guild_owner_id) == []
    assert len(all_dms(fake_discord)) == len(TEAM)


# --- the operator's daily cap ---------------------------------------------------------------------


async def test_the_total_daily_cap_refuses_privately_and_alerts_the_operator_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(total_daily_cap=2)
    for member in (MEMBER, MEMBER + 1):
        assert embed_title(await imagine(fake_discord, user_id=member)) == READY_TITLE
    assert dms_to(fake_discord, fake_discord.owner_id) == [], "no alert before the cap"

    for member in (MEMBER + 2, MEMBER + 3, MEMBER + 2):
        interaction = await fake_discord.send_interaction(
            "imagine", {"prompt": PROMPT}, user_id=member
        )
        refusal = await final_answer(fake_discord, interaction)
        assert first_answer_is_private(fake_discord, interaction)
        assert "made all the images it can today" in answer_text(refusal)
        assert answer_text(refusal).endswith("Nothing was spent.")
    await fake_discord.wait_for_request(
        lambda r: (
            r.method == "POST"
            and r.path == f"/channels/{fake_discord.dm_channel_id(fake_discord.owner_id)}/messages"
        ),
        5,
    )
    await running.idle()
    await no_more_alerts(fake_discord)
    assert len(fake_kie.created_tasks()) == 2, "nothing created beyond the cap"
    (alert,) = dms_to(fake_discord, fake_discord.owner_id)
    assert "TOTAL_DAILY_CAP" in answer_text(alert)
    assert dms_to(fake_discord, fake_discord.guild_owner_id) == []
    assert await running.units_charged() == 2


# --- the start-up check of the kie.ai account -----------------------------------------------------


async def _stop(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """SIGTERM, then the exit status and everything the process wrote."""
    try:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(process.wait(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = (await process.stdout.read()).decode() if process.stdout else ""
    return status, output


async def test_a_refused_kie_key_stops_the_bot_at_start_with_one_safe_sentence(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    wrong = "wrong-kie-key-8f3a1c"
    env = bot_environment(
        fake_discord, fake_kie, tmp_path / "imagine.db", KIE_API_KEY=wrong, WEBHOOK_PORT="0"
    )
    process = await bot_process(env, tmp_path)
    try:
        status = await asyncio.wait_for(process.wait(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = (await process.stdout.read()).decode() if process.stdout else ""
    assert status == 2, output
    assert "KIE_API_KEY" in output
    assert wrong not in output
    assert fake_discord.token not in output
    assert "Traceback" not in output
    assert len(fake_kie.calls_to(CREDIT)) == 1
    assert fake_discord.identify_count == 0, "stopped before connecting to Discord"


async def test_an_unreachable_kie_at_start_logs_one_warning_and_the_bot_runs(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = bot_environment(
        fake_discord, fake_kie, tmp_path / "imagine.db", KIE_API_BASE=closed, WEBHOOK_PORT="0"
    )
    process = await bot_process(env, tmp_path)
    try:
        await fake_discord.wait_until_ready(30)
    finally:
        status, output = await _stop(process)
    assert status == 0, output
    warnings = [
        line for line in output.splitlines() if "WARNING" in line and "balance" in line.lower()
    ]
    assert len(warnings) == 1, output
    assert "starting anyway" in warnings[0]
    assert fake_kie.api_key not in output
    assert fake_discord.token not in output


async def test_a_healthy_kie_account_logs_the_balance_and_about_how_many_images(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    env = bot_environment(fake_discord, fake_kie, tmp_path / "imagine.db", WEBHOOK_PORT="0")
    process = await bot_process(env, tmp_path)
    try:
        await fake_discord.wait_until_ready(30)
    finally:
        status, output = await _stop(process)
    assert status == 0, output
    assert re.search(r"1,?000 credits, roughly [1-9]\d* 1K images", output), output
    assert len(fake_kie.calls_to(CREDIT)) == 1
    assert fake_kie.api_key not in output
