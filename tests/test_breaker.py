"""Outages: kie.ai's circuit breaker (stop, tell once, keep the units, probe, resume) and
Discord outages on delivery (wait and deliver again, never refund Discord's fault)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import aiohttp

from bot.__main__ import build_webhook_server
from bot.domain import JobState
from bot.kie import BreakerState, CircuitBreaker
from bot.settings import Settings
from tests.clock import FakeClock
from tests.conftest import StartBot, free_port
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import CreateFault, FakeKie, TaskScript
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    embed_title,
    eventually,
    field,
    final_answer,
    is_original_edit,
    nothing_else_happens,
    original_edits,
)
from tests.test_durability import channel_posts, wait_for_state

PROMPT = "a lighthouse in a storm, oil painting"
KIE_DOWN_TITLE = "⚠️ kie.ai is having trouble…"
OUTAGE = CreateFault(code=500, http_status=500)  # every API call, while `fake_kie.outage` is set
CREATE = "/api/v1/jobs/createTask"
STATUS = "/api/v1/jobs/recordInfo"
CREDIT = "/api/v1/chat/credit"


def notices(fake: FakeDiscord, interaction: FakeInteraction) -> list[RecordedRequest]:
    """The reply edits that told the member kie.ai is down."""
    return [r for r in original_edits(fake, interaction) if embed_title(r) == KIE_DOWN_TITLE]


def finals(fake: FakeDiscord, interaction: FakeInteraction) -> list[RecordedRequest]:
    return [
        r
        for r in original_edits(fake, interaction)
        if r.status == 200 and embed_title(r) in (READY_TITLE, FAILED_TITLE)
    ]


async def told_kie_is_down(fake: FakeDiscord, interaction: FakeInteraction) -> None:
    await fake.wait_for_request(
        lambda r: is_original_edit(r, interaction) and embed_title(r) == KIE_DOWN_TITLE
    )


def failed_calls(fake: FakeKie, path: str) -> int:
    return sum(1 for call in fake.calls_to(path) if call.status == 500)


# --- the breaker itself ---------------------------------------------------------------------------


async def test_the_breaker_opens_after_the_threshold_and_probes_with_growing_capped_cooldowns() -> (
    None
):
    clock = FakeClock()
    breaker = CircuitBreaker(
        threshold=3, cooldown=10, max_cooldown=25, clock=clock, sleep=clock.sleep
    )
    answers = [False, False, True]  # kie.ai answers the third probe
    probes: list[tuple[float, BreakerState]] = []

    async def probe() -> None:
        probes.append((clock.now, breaker.status.state))
        if answers.pop(0):
            breaker.succeeded()
        else:
            breaker.failed()

    breaker.set_probe(probe)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()  # any answer resets the count: failures must be in a row
    breaker.failed()
    breaker.failed()
    assert breaker.status.state is BreakerState.CLOSED
    breaker.failed()
    opened = clock.now
    assert breaker.status == replace(breaker.status, state=BreakerState.OPEN, since=opened)
    assert breaker.status.failures == 3
    await asyncio.wait_for(breaker.wait_closed(), 5)
    # One probe at a time, half-open while it is out; 10 s, then doubled, then capped at 25 s.
    assert probes == [
        (opened + 10, BreakerState.HALF_OPEN),
        (opened + 30, BreakerState.HALF_OPEN),
        (opened + 55, BreakerState.HALF_OPEN),
    ]
    assert breaker.status.state is BreakerState.CLOSED
    assert breaker.status.failures == 0
    await breaker.stop()


# --- kie.ai down ----------------------------------------------------------------------------------


async def test_kie_answering_500_stops_new_tasks_tells_waiting_members_once_and_all_finish(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(kie_breaker_failures=3, kie_breaker_cooldown=0.2)
    # The first image is still being made when kie.ai goes down.
    fake_kie.script_next(TaskScript(states=["waiting", "generating", "success"], step_seconds=0.8))
    first = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=101)
    await fake_kie.wait_for_tasks(1)
    fake_kie.outage = OUTAGE
    # Its status checks fail; the third opens the breaker.
    await eventually(lambda: failed_calls(fake_kie, STATUS) >= 3, what="three failed polls")
    waiting = [
        await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=user)
        for user in (102, 103)
    ]
    for interaction in waiting:
        await told_kie_is_down(fake_discord, interaction)
    # kie.ai is probed while down (cheaply, one call at a time), and nothing else reaches it.
    polls_when_open = len(fake_kie.calls_to(STATUS))
    await eventually(lambda: failed_calls(fake_kie, CREDIT) >= 2, what="two failed probes")
    assert len(fake_kie.calls_to(CREATE)) == 1
    assert len(fake_kie.calls_to(STATUS)) == polls_when_open, "polls wait while kie.ai is down"

    fake_kie.outage = None  # kie.ai is back: the next probe closes the breaker by itself
    for interaction in (first, *waiting):
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    for interaction in waiting:
        assert len(notices(fake_discord, interaction)) == 1, "one line, not one per failure"
    assert notices(fake_discord, first) == []  # its task was at kie.ai already
    assert len(fake_kie.calls_to(CREATE)) == 3
    assert fake_kie.violations == 0, "the queued tasks went out within kie.ai's limits"
    # Every unit accounted for: three charged, three images delivered, none refunded.
    assert await running.job_states() == {"delivered": 3}
    assert await running.units_charged() == 3


async def test_failed_submissions_count_toward_the_threshold_and_are_refunded_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    # No balance checks after jobs: only the submissions reach kie.ai here.
    running = await start_bot(
        kie_breaker_failures=2, kie_breaker_cooldown=0.2, low_credits_warning=0
    )
    fake_kie.outage = OUTAGE
    refused = []
    for user in (201, 202):
        interaction = await fake_discord.send_interaction(
            "imagine", {"prompt": PROMPT}, user_id=user
        )
        final = await final_answer(fake_discord, interaction)
        # A 500 may have created the task: never sent again, refunded.
        assert embed_title(final) == FAILED_TITLE
        assert "went back" in field(final, "Quota")
        refused.append(interaction)
    assert len(fake_kie.calls_to(CREATE)) == 2
    # The threshold is reached: the next member waits, with their units kept.
    later = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=203)
    await told_kie_is_down(fake_discord, later)
    await eventually(lambda: failed_calls(fake_kie, CREDIT) >= 1, what="a failed probe")
    assert len(fake_kie.calls_to(CREATE)) == 2
    job = await running.storage.jobs.get_job(3)
    assert job is not None and job.state is JobState.RESERVED

    fake_kie.outage = None
    assert embed_title(await final_answer(fake_discord, later)) == READY_TITLE
    assert len(fake_kie.calls_to(CREATE)) == 3
    for interaction in refused:
        assert len(finals(fake_discord, interaction)) == 1, "refunded and told once"
    assert await running.job_states() == {"refunded": 2, "delivered": 1}
    assert await running.units_charged() == 1


async def test_maintenance_that_opens_the_breaker_puts_the_job_back_in_line_unrefunded(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(
        kie_breaker_failures=2, kie_breaker_cooldown=0.2, low_credits_warning=0
    )
    # 455: nothing was created. The second one opens the breaker mid-retry.
    fake_kie.fail_create_next(CreateFault(code=455), CreateFault(code=455))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    await told_kie_is_down(fake_discord, interaction)
    assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    assert len(fake_kie.calls_to(CREATE)) == 3
    assert len(fake_kie.created_tasks()) == 1
    assert len(notices(fake_discord, interaction)) == 1
    assert await running.job_states() == {"delivered": 1}
    assert await running.units_charged() == 1


async def test_rejected_prompts_are_not_an_outage(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(
        kie_breaker_failures=2, kie_breaker_cooldown=30, low_credits_warning=0
    )
    fake_kie.fail_create_next(
        CreateFault(code=422, msg="prompt is invalid"),
        CreateFault(code=501, msg="Generation failed"),
        CreateFault(code=422, msg="prompt is invalid"),
    )
    for user in (301, 302, 303):
        interaction = await fake_discord.send_interaction(
            "imagine", {"prompt": PROMPT}, user_id=user
        )
        assert embed_title(await final_answer(fake_discord, interaction)) == FAILED_TITLE
    # With a 30 s cool-down, an open breaker would hold this one far beyond the test.
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=304)
    assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    assert notices(fake_discord, interaction) == []
    assert fake_kie.calls_to(CREDIT) == [], "no probe: the breaker never opened"
    assert await running.job_states() == {"refunded": 3, "delivered": 1}


async def test_jobs_past_their_deadline_while_kie_is_down_are_refunded_once_and_readyz_shows_it(
    settings: Settings, start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(
        kie_breaker_failures=1, kie_breaker_cooldown=60, job_timeout=1.0, low_credits_warning=0
    )
    port = free_port()
    server = build_webhook_server(replace(settings, webhook_port=port), running.bot)
    assert server is not None
    await server.start()
    try:
        await asyncio.wait_for(running.bot.wait_until_ready(), 10)
        before = await _get_json(f"http://127.0.0.1:{port}/readyz")
        assert before[0] == 200 and before[1]["kie"]["state"] == "closed"

        fake_kie.script_next(TaskScript(states=["waiting", "success"], step_seconds=30))
        submitted = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=401)
        # Seen once at kie.ai before it goes down (a job never seen gets a longer first look).
        await eventually(lambda: any(c.status == 200 for c in fake_kie.calls_to(STATUS)))
        fake_kie.outage = OUTAGE
        await eventually(lambda: failed_calls(fake_kie, STATUS) >= 1, what="a failed poll")
        waiting = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=402)
        await told_kie_is_down(fake_discord, waiting)

        status, report = await _get_json(f"http://127.0.0.1:{port}/readyz")
        # Waiting on kie.ai is not a reason to restart the bot: ready, and says why it waits.
        assert status == 200 and report["ok"] is True
        assert report["kie"]["state"] == "open" and report["kie"]["failures"] >= 1

        for interaction in (submitted, waiting):
            final = await final_answer(fake_discord, interaction)
            assert embed_title(final) == FAILED_TITLE
            assert "took too long" in field(final, "What happened")
        await nothing_else_happens(fake_discord, fake_kie, within=0.3)
        for interaction in (submitted, waiting):
            assert len(finals(fake_discord, interaction)) == 1
        assert len(fake_kie.calls_to(CREATE)) == 1, "the waiting job never reached kie.ai"
        assert await running.job_states() == {"refunded": 2}
        assert await running.units_charged() == 0
    finally:
        await server.stop()


async def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, json.loads(await response.text())


# --- Discord down on delivery ---------------------------------------------------------------------


async def test_a_channel_post_that_meets_503s_is_delivered_once_when_discord_recovers(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(redelivery_delay=0.05)
    fake_kie.script_next(TaskScript(states=["waiting", "generating", "success"], step_seconds=0.4))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=55)
    await wait_for_state(running.storage, 1, JobState.SUBMITTED)
    fake_discord.expire_token(interaction)  # the result must go to the channel
    channel = f"/channels/{interaction.channel_id}/messages"
    fake_discord.fail_next("POST", channel, status=503, code=0, message="unavailable", count=2)
    await eventually(lambda: channel_posts(fake_discord, fake_discord.channel_id), 10)
    await nothing_else_happens(fake_discord, within=0.3)
    posts = [r for r in fake_discord.requests if r.method == "POST" and r.path == channel]
    assert [r.status for r in posts] == [503, 503, 200]
    assert embed_title(posts[-1]) == READY_TITLE
    assert not any("/users/@me/channels" in r.path for r in fake_discord.requests), "no DM"
    assert await running.job_states() == {"delivered": 1}
    assert await running.units_charged() == 1


async def test_a_result_edit_lost_on_the_network_is_sent_again_not_refunded(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(redelivery_delay=0.05)
    fake_kie.script_next(TaskScript(states=["waiting", "success"], step_seconds=0.3))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    # Let the progress edit through; the next one, which carries the image, is cut off.
    await fake_discord.wait_for_request(lambda r: r in original_edits(fake_discord, interaction))
    fake_discord.drop_next("PATCH", "/messages/@original")
    await fake_discord.wait_for_request(
        lambda r: is_original_edit(r, interaction) and r.status == 200 and bool(r.files)
    )
    await nothing_else_happens(fake_discord, within=0.3)
    with_image = [r for r in original_edits(fake_discord, interaction) if r.files]
    assert [r.status for r in with_image] == [0, 200], "lost once, then delivered once"
    assert embed_title(with_image[-1]) == READY_TITLE
    assert channel_posts(fake_discord, fake_discord.channel_id) == []
    assert await running.job_states() == {"delivered": 1}
    assert await running.units_charged() == 1
