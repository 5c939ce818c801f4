"""Several images per request (`/imagine count:`): one job each, charged all or none, delivered
together as one message with a Vary and a Use button per image. Read at the wire."""

from __future__ import annotations

from typing import Any

from bot.domain import JobState
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import CreateFault, FakeKie, TaskScript
from tests.helpers import (
    FAILED_TITLE,
    answer_text,
    embed_of,
    embed_title,
    eventually,
    final_answer,
    first_answer_is_private,
    is_original_edit,
    is_private,
    nothing_else_happens,
    original_edits,
)
from tests.test_fair_use import CREATE, MEMBER, POLL, slow

PROMPT = "a fox in the snow, woodcut"


def labels(message: dict[str, Any]) -> list[list[str]]:
    return [[b["label"] for b in row["components"]] for row in message.get("components", [])]


def custom_ids(message: dict[str, Any]) -> list[str]:
    return [b["custom_id"] for row in message.get("components", []) for b in row["components"]]


async def outcome(fake: FakeDiscord, interaction: Any) -> Any:
    """The edit that shows a request's images (any number) or its failure."""

    def shows(request: Any) -> bool:
        if not is_original_edit(request, interaction):
            return False
        title = embed_title(request)
        return title.endswith(" ready") or title == FAILED_TITLE

    return await fake.wait_for_request(shows, 15)


def ready_edits(fake: FakeDiscord, interaction: Any) -> list[Any]:
    return [e for e in original_edits(fake, interaction) if "ready" in embed_title(e)]


async def test_four_images_come_in_one_message_with_vary_and_use_buttons(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(poll_interval=POLL)
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "count": 4}, user_id=MEMBER
    )
    final = await outcome(fake_discord, interaction)
    assert embed_title(final) == "🖼️ Your 4 images are ready"
    await running.idle()

    assert len(fake_kie.calls_to(CREATE)) == 4, "each image is its own kie.ai task"
    message = fake_discord.original_message(interaction)
    assert message is not None
    assert len(message["attachments"]) == 4
    assert labels(message) == [
        ["Vary 1", "Vary 2", "Vary 3", "Vary 4"],
        ["Use 1", "Use 2", "Use 3", "Use 4"],
    ]
    assert await running.units_charged() == 4
    assert await running.job_states() == {"delivered": 4}
    jobs = await running.storage.jobs.recent_jobs(MEMBER, fake_discord.guild_id, 10)
    assert {job.batch_id for job in jobs} == {min(job.id for job in jobs)}
    assert sorted(job.batch_index for job in jobs) == [0, 1, 2, 3]
    assert {job.batch_size for job in jobs} == {4}
    assert len(ready_edits(fake_discord, interaction)) == 1, "delivered once, as one message"
    await nothing_else_happens(fake_discord, fake_kie, within=0.3)


async def test_a_request_that_does_not_fit_the_quota_whole_is_refused_and_costs_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(daily_quota=3)
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "count": 4}, user_id=MEMBER
    )
    answer = await final_answer(fake_discord, interaction)
    assert is_private(answer) and first_answer_is_private(fake_discord, interaction)
    assert "quota" in answer_text(answer).lower()
    assert await running.units_charged() == 0
    assert fake_kie.calls_to(CREATE) == []


async def test_two_failed_of_four_are_refunded_and_said_with_the_two_images(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(poll_interval=POLL)
    fake_kie.script_next(
        TaskScript(states=["generating", "success"], step_seconds=0.1),
        TaskScript(states=["generating", "fail"], step_seconds=0.1),
        TaskScript(states=["generating", "success"], step_seconds=0.1),
        TaskScript(states=["generating", "fail"], step_seconds=0.1),
    )
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "count": 4}, user_id=MEMBER
    )
    final = await outcome(fake_discord, interaction)
    assert embed_title(final) == "🖼️ Your 2 images are ready"
    quota = next(f["value"] for f in embed_of(final)["fields"] if f["name"].startswith("Quota"))
    assert "2 of 4 could not be made; their 2 units went back" in quota
    message = fake_discord.original_message(interaction)
    assert message is not None and len(message["attachments"]) == 2
    assert labels(message) == [["Vary 1", "Vary 2"], ["Use 1", "Use 2"]]
    assert await running.units_charged() == 2
    assert await running.job_states() == {"delivered": 2, "refunded": 2}


async def test_when_every_image_fails_the_usual_failure_is_shown_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(poll_interval=POLL)
    fake_kie.fail_create_next(*(CreateFault(code=422, msg="prompt is invalid") for _ in range(3)))
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "count": 3}, user_id=MEMBER
    )
    final = await outcome(fake_discord, interaction)
    assert embed_title(final) == FAILED_TITLE
    assert "3 units went back" in str(embed_of(final)["fields"])
    assert await running.units_charged() == 0
    await nothing_else_happens(fake_discord, within=0.3)
    failures = [
        e for e in original_edits(fake_discord, interaction) if embed_title(e) == FAILED_TITLE
    ]
    assert len(failures) == 1


async def test_a_members_four_images_count_as_four_against_the_running_limit(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_running_per_member=2, poll_interval=POLL)
    fake_kie.script_next(*(slow(0.2) for _ in range(4)))
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "count": 4}, user_id=MEMBER
    )
    final = await outcome(fake_discord, interaction)
    assert embed_title(final) == "🖼️ Your 4 images are ready"
    tasks = fake_kie.created_tasks()
    most = max(sum(t.created_at <= s.created_at < t.done_at for t in tasks) for s in tasks)
    assert most <= 2
    waiting = [e for e in original_edits(fake_discord, interaction) if "Waiting" in embed_title(e)]
    assert waiting, "the reply showed the rest waiting"
    assert any("imagine:cancel:" in str(e.json) for e in waiting)
    assert await running.units_charged() == 4
    assert is_original_edit(final, interaction)


async def test_use_posts_one_image_alone_with_the_usual_buttons(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(poll_interval=POLL)
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "count": 2}, user_id=MEMBER
    )
    await outcome(fake_discord, interaction)
    await running.idle()
    message = fake_discord.original_message(interaction)
    assert message is not None
    use_2 = next(
        c for c in custom_ids(message) if c.startswith("imagine:use:") and c.endswith(":2")
    )
    job_id = int(use_2.split(":")[2])

    press = await fake_discord.press_button(message["id"], use_2, user_id=MEMBER)
    posted = await fake_discord.wait_for_request(
        lambda r: (
            (r.method == "POST" and press.token in r.path and "/webhooks/" in r.path)
            or (is_original_edit(r, press) and bool(embed_of(r)))
        )
    )
    assert embed_title(posted) == "🖼️ Your image is ready"
    await running.idle()
    alone = fake_discord.original_message(press)
    assert alone is not None
    assert len(alone["attachments"]) == 1
    assert alone["attachments"][0]["filename"].startswith(f"imagine-{job_id}.")
    assert custom_ids(alone) == [
        f"imagine:reroll:{job_id}",
        f"imagine:vary:{job_id}",
        f"imagine:edit:{job_id}",
        f"imagine:delete:{job_id}",
    ]
    assert await running.units_charged() == 2, "Use spends nothing"

    other = await fake_discord.press_button(message["id"], use_2, user_id=MEMBER + 1)
    refusal = await final_answer(fake_discord, other)
    assert is_private(refusal)


async def test_cancel_on_a_batch_cancels_the_waiting_images_and_the_started_ones_arrive(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_running_per_member=2, poll_interval=POLL)
    fake_kie.script_next(*(slow(0.6) for _ in range(4)))
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "count": 4}, user_id=MEMBER
    )
    await fake_kie.wait_for_tasks(2)
    await fake_discord.wait_for_request(
        lambda r: is_original_edit(r, interaction) and "imagine:cancel:" in str(r.json)
    )
    message = fake_discord.original_message(interaction)
    assert message is not None
    (cancel_id,) = [c for c in custom_ids(message) if c.startswith("imagine:cancel:")]

    press = await fake_discord.press_button(message["id"], cancel_id, user_id=MEMBER)
    answer = await final_answer(fake_discord, press)
    assert is_private(answer)
    assert "2 units went back" in answer_text(answer)
    assert "will be delivered" in answer_text(answer)

    final = await outcome(fake_discord, interaction)
    assert embed_title(final) == "🖼️ Your 2 images are ready"
    assert "2 of 4 could not be made; their 2 units went back" in str(embed_of(final))
    assert await running.units_charged() == 2
    assert await running.job_states() == {"delivered": 2, "refunded": 2}
    await nothing_else_happens(fake_discord, fake_kie, within=0.3)
    assert len(fake_kie.calls_to(CREATE)) == 2, "the cancelled images never reached kie.ai"


async def test_a_batch_interrupted_by_a_restart_is_delivered_once_with_every_image(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    before = await start_bot(poll_interval=POLL)
    fake_kie.script_next(TaskScript(states=["generating", "success"], step_seconds=0.05), slow(1.0))
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "count": 2}, user_id=MEMBER
    )
    await fake_kie.wait_for_tasks(2)

    async def first_waits_for_its_sibling() -> bool:
        states = await before.storage.jobs.count_by_state()
        return states.get(JobState.DELIVERING, 0) == 1

    await eventually(first_waits_for_its_sibling, timeout=10)
    await before.bot.close()

    after = await start_bot(poll_interval=POLL)
    final = await outcome(fake_discord, interaction)
    assert embed_title(final) == "🖼️ Your 2 images are ready"
    await after.idle()
    message = fake_discord.original_message(interaction)
    assert message is not None and len(message["attachments"]) == 2
    assert len(fake_kie.calls_to(CREATE)) == 2, "nothing submitted twice"
    assert len(ready_edits(fake_discord, interaction)) == 1, "delivered once"
    assert await after.units_charged() == 2
    assert await after.job_states() == {"delivered": 2}


async def test_count_is_an_option_from_1_to_4_and_a_forged_count_is_refused_privately(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    (imagine,) = [c for c in fake_discord.synced_commands[None] if c["name"] == "imagine"]
    (count,) = [o for o in imagine["options"] if o["name"] == "count"]
    assert (count["type"], count["min_value"], count["max_value"]) == (4, 1, 4)
    assert not count.get("required", False)

    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "count": 9}, user_id=MEMBER
    )
    answer = await final_answer(fake_discord, interaction)
    assert is_private(answer) and first_answer_is_private(fake_discord, interaction)
    assert await running.units_charged() == 0
    assert fake_kie.calls_to(CREATE) == []


async def test_cancelling_the_last_waiting_image_sends_the_batch_of_those_already_made(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    # kie.ai's submission limit (1 per 4 s here) holds the second image in line, cancellable,
    # while the first is made and waits for it.
    running = await start_bot(submit_limit=(1, 4.0), poll_interval=POLL)
    fake_kie.script_next(TaskScript(states=["generating", "success"], step_seconds=0.05))
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "count": 2}, user_id=MEMBER
    )

    async def first_is_made() -> bool:
        states = await running.storage.jobs.count_by_state()
        return states.get(JobState.DELIVERING, 0) == 1

    await eventually(first_is_made, timeout=10)
    await fake_discord.wait_for_request(
        lambda r: is_original_edit(r, interaction) and "imagine:cancel:" in str(r.json)
    )
    message = fake_discord.original_message(interaction)
    assert message is not None
    (cancel_id,) = [c for c in custom_ids(message) if c.startswith("imagine:cancel:")]
    press = await fake_discord.press_button(message["id"], cancel_id, user_id=MEMBER)
    answer = await final_answer(fake_discord, press)
    assert is_private(answer) and "1 unit went back" in answer_text(answer)

    final = await outcome(fake_discord, interaction)
    assert embed_title(final) == "🖼️ Your image is ready"
    assert "1 of 2 could not be made; their 1 unit went back" in str(embed_of(final))
    assert await running.job_states() == {"delivered": 1, "refunded": 1}
    assert await running.units_charged() == 1
    await nothing_else_happens(fake_discord, fake_kie, within=0.3)
    assert len(fake_kie.calls_to(CREATE)) == 1
