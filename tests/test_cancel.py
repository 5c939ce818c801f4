"""The ✖ Cancel button on a waiting reply, pressed at the wire against the real bot: in time it
ends the job and refunds it exactly once; too late it changes nothing and the image arrives."""

from __future__ import annotations

import asyncio
from typing import Any

import discord

from bot.domain import JobState
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import CreateFault, FakeKie
from tests.helpers import (
    READY_TITLE,
    answer_text,
    embed_of,
    embed_title,
    eventually,
    final_answer,
    is_private,
    nothing_else_happens,
)
from tests.test_fair_use import CREATE, MEMBER, POLL, imagine, shown_waiting, slow

CANCELLED_TITLE = "✖ Cancelled"
OTHER = 4343
MODERATOR = str(
    discord.Permissions(view_channel=True, send_messages=True, manage_messages=True).value
)


def cancel_ids(message: dict[str, Any]) -> list[str]:
    return [
        button["custom_id"]
        for row in message.get("components", [])
        for button in row.get("components", [])
        if str(button.get("custom_id", "")).startswith("imagine:cancel:")
    ]


async def waiting_second(
    fake_discord: FakeDiscord, fake_kie: FakeKie
) -> tuple[FakeInteraction, FakeInteraction, dict[str, Any]]:
    """A member's first image generating and their second waiting (limit 1), its reply showing
    the Cancel button; returns both interactions and the waiting reply's message."""
    fake_kie.script_next(slow(), slow())
    first = await imagine(fake_discord, prompt="first boat")
    await fake_kie.wait_for_tasks(1)
    second = await imagine(fake_discord, prompt="second boat")
    await shown_waiting(fake_discord, second, 1)
    message = fake_discord.original_message(second)
    assert message is not None
    return first, second, message


async def press_answer(fake: FakeDiscord, press: FakeInteraction) -> RecordedRequest:
    return await fake.wait_for_request(
        lambda r: r.method == "POST" and r.path.endswith("/callback") and str(press.id) in r.path
    )


async def test_cancel_on_a_waiting_reply_ends_the_job_refunds_it_and_frees_its_place(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_running_per_member=1, poll_interval=POLL)
    first, _, message = await waiting_second(fake_discord, fake_kie)
    (cancel_id,) = cancel_ids(message)
    assert await running.storage.jobs.total_units_charged() == 2

    press = await fake_discord.press_button(message["id"], cancel_id, user_id=MEMBER)
    answer = await press_answer(fake_discord, press)

    assert (answer.json or {})["type"] == 7, "the waiting reply itself is updated"
    shown = fake_discord.message(message["id"])
    assert shown is not None and shown["embeds"][0]["title"] == CANCELLED_TITLE
    assert "1 unit went back" in shown["embeds"][0]["fields"][0]["value"]
    assert cancel_ids(shown) == [], "no button left on a cancelled reply"
    assert running.bot.jobs.run_queue.waiting() == 0, "its place in line is free"
    assert embed_title(await final_answer(fake_discord, first)) == READY_TITLE
    assert await running.units_charged() == 1
    assert await running.job_states() == {"delivered": 1, "refunded": 1}
    await nothing_else_happens(fake_kie, fake_discord, within=0.5)
    assert len(fake_kie.calls_to(CREATE)) == 1, "the cancelled job never reached kie.ai"
    assert fake_discord.message(message["id"]) == shown, "nothing overwrote the cancellation"


async def test_only_the_requester_or_a_moderator_may_cancel(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_running_per_member=1, poll_interval=POLL)
    _, _, message = await waiting_second(fake_discord, fake_kie)
    (cancel_id,) = cancel_ids(message)

    press = await fake_discord.press_button(message["id"], cancel_id, user_id=OTHER)
    refusal = await press_answer(fake_discord, press)
    assert is_private(refusal)
    assert "can cancel it" in answer_text(refusal)
    assert await running.storage.jobs.total_units_charged() == 2, "nothing changed"
    still = fake_discord.message(message["id"])
    assert still is not None and cancel_ids(still) == [cancel_id]

    press = await fake_discord.press_button(
        message["id"], cancel_id, user_id=OTHER, permissions=MODERATOR
    )
    assert (await press_answer(fake_discord, press)).json["type"] == 7  # type: ignore[index]
    assert await running.units_charged() == 1


async def test_two_presses_at_once_refund_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_running_per_member=1, poll_interval=POLL)
    _, _, message = await waiting_second(fake_discord, fake_kie)
    (cancel_id,) = cancel_ids(message)

    presses = await asyncio.gather(
        fake_discord.press_button(message["id"], cancel_id, user_id=MEMBER),
        fake_discord.press_button(message["id"], cancel_id, user_id=MEMBER),
    )
    answers = [await press_answer(fake_discord, press) for press in presses]

    kinds = sorted((a.json or {})["type"] for a in answers)
    assert kinds == [4, 7], "one press cancels, the other hears it was already done"
    (second,) = [a for a in answers if (a.json or {})["type"] == 4]
    assert is_private(second) and "already cancelled" in answer_text(second)
    assert await running.units_charged() == 1
    assert await running.job_states() == {"delivered": 1, "refunded": 1}


async def test_a_press_while_the_job_is_being_submitted_is_too_late_and_the_image_arrives(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_running_per_member=1, poll_interval=POLL)
    first, second, message = await waiting_second(fake_discord, fake_kie)
    (cancel_id,) = cancel_ids(message)
    # The second job's createTask is held at kie.ai: it is on the wire, the button still shown.
    fake_kie.fail_create_next(CreateFault(code=200, delay=1.0))
    await final_answer(fake_discord, first)
    job_id = int(cancel_id.rsplit(":", 1)[1])

    async def submitting() -> bool:
        job = await running.storage.jobs.get_job(job_id)
        return job is not None and job.state is JobState.SUBMITTING

    await eventually(submitting, what="the second job's createTask on the wire")
    press = await fake_discord.press_button(message["id"], cancel_id, user_id=MEMBER)
    answer = await press_answer(fake_discord, press)

    assert is_private(answer) and "Too late to cancel" in answer_text(answer)
    assert embed_title(await final_answer(fake_discord, second)) == READY_TITLE
    delivered = fake_discord.message(message["id"])
    assert delivered is not None and cancel_ids(delivered) == []
    assert await running.units_charged() == 2
    assert await running.job_states() == {"delivered": 2}


async def test_the_button_goes_once_kie_ai_has_the_job(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(max_running_per_member=1, poll_interval=POLL)
    first, second, _ = await waiting_second(fake_discord, fake_kie)
    await final_answer(fake_discord, first)
    generating = await fake_discord.wait_for_request(
        lambda r: (
            second.token in r.path
            and r.method == "PATCH"
            and embed_of(r).get("title") == "🎨 Generating…"
        )
    )
    assert (generating.json or {}).get("components") == []
    await final_answer(fake_discord, second)


async def test_a_cancelled_job_stays_cancelled_after_a_restart(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    before = await start_bot(max_running_per_member=1, poll_interval=POLL)
    first, _, message = await waiting_second(fake_discord, fake_kie)
    (cancel_id,) = cancel_ids(message)
    press = await fake_discord.press_button(message["id"], cancel_id, user_id=MEMBER)
    await press_answer(fake_discord, press)
    await before.bot.close()

    after = await start_bot(max_running_per_member=1, poll_interval=POLL)
    assert embed_title(await final_answer(fake_discord, first)) == READY_TITLE
    assert await after.units_charged() == 1
    assert await after.job_states() == {"delivered": 1, "refunded": 1}
    await nothing_else_happens(fake_kie, within=0.5)
    assert len(fake_kie.calls_to(CREATE)) == 1, "not submitted after the restart either"
    shown = fake_discord.message(message["id"])
    assert shown is not None and shown["embeds"][0]["title"] == CANCELLED_TITLE
