"""Fair use end to end: running limits per member and per server, and the line for the rest.

The real bot against the fake Discord and fake kie.ai, read at the wire: what a waiting member
sees, when their job reaches kie.ai, and that nothing is lost, doubled or charged twice.
"""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import CreateFault, FakeKie, FakeTask, RecordedCall, TaskScript
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    admin_command,
    embed_title,
    field,
    final_answer,
    is_original_edit,
    original_edits,
)

WAITING_TITLE = "⏳ Waiting for a free slot…"
GENERATING_TITLE = "🎨 Generating…"
CREATE = "/api/v1/jobs/createTask"
MEMBER = 4242
MEMBERS = (5001, 5002, 5003, 5004)
PROMPT = "a paper boat on a puddle"
# kie.ai answers 10 status queries a second: polling at this pace sees a finished task at once
# instead of waiting for the query budget to refill.
POLL = 0.15


def slow(step_seconds: float = 0.3) -> TaskScript:
    """A task that takes 2 × `step_seconds` at kie.ai: long enough to be caught running."""
    return TaskScript(states=["waiting", "generating", "success"], step_seconds=step_seconds)


async def imagine(
    fake: FakeDiscord, user_id: int = MEMBER, prompt: str = PROMPT, **kwargs: Any
) -> FakeInteraction:
    return await fake.send_interaction("imagine", {"prompt": prompt}, user_id=user_id, **kwargs)


def queue_position(edit: RecordedRequest) -> int | None:
    """The place in line a waiting reply shows; None for any other reply."""
    if embed_title(edit) != WAITING_TITLE:
        return None
    found = re.match(r"Position \*\*(\d+)\*\* in line · ", field(edit, "Queue"))
    assert found, field(edit, "Queue")
    return int(found[1])


async def shown_waiting(
    fake: FakeDiscord, interaction: FakeInteraction, position: int, timeout: float = 10
) -> RecordedRequest:
    """The edit that shows this reply waiting at `position` (already sent or still to come)."""
    return await fake.wait_for_request(
        lambda r: is_original_edit(r, interaction) and queue_position(r) == position, timeout
    )


def titles(fake: FakeDiscord, interaction: FakeInteraction) -> list[str]:
    """The titles the reply showed, in order; an edit Discord refused and discord.py retried
    shows once."""
    return [embed_title(e) for e in original_edits(fake, interaction) if e.status == 200]


def positions(fake: FakeDiscord, interaction: FakeInteraction) -> list[int]:
    shown = [queue_position(e) for e in original_edits(fake, interaction) if e.status == 200]
    return [p for p in shown if p is not None]


def most_at_once(tasks: list[FakeTask]) -> int:
    """The most tasks generating at kie.ai at the same moment."""
    return max(sum(t.created_at <= s.created_at < t.done_at for t in tasks) for s in tasks)


def task_for(fake_kie: FakeKie, prompt: str) -> FakeTask:
    (task,) = [t for t in fake_kie.created_tasks() if t.input["prompt"] == prompt]
    return task


def create_call_for(fake_kie: FakeKie, prompt: str) -> RecordedCall:
    """The createTask request for `prompt`. Its `at` and the fake Discord's are both read from
    the monotonic clock, so the two fakes' records can be put in order."""
    (call,) = [c for c in fake_kie.calls_to(CREATE) if c.json["input"]["prompt"] == prompt]
    return call


# --- a member's limit -----------------------------------------------------------------------------


async def test_a_members_second_image_waits_its_turn_and_is_then_delivered(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_running_per_member=1, poll_interval=POLL)
    fake_kie.script_next(slow(), slow())
    first = await imagine(fake_discord, prompt="first boat")
    await fake_kie.wait_for_tasks(1)
    second = await imagine(fake_discord, prompt="second boat")

    waiting = await shown_waiting(fake_discord, second, 1)
    assert "you can have 1 running at once" in field(waiting, "Queue")
    assert field(waiting, "Started").startswith("<t:")
    assert len(fake_kie.calls_to(CREATE)) == 1, "the waiting job is not at kie.ai yet"
    assert await running.storage.jobs.total_units_charged() == 2, "a waiting job is already charged"

    first_final = await final_answer(fake_discord, first)
    second_final = await final_answer(fake_discord, second)
    assert embed_title(first_final) == READY_TITLE
    assert embed_title(second_final) == READY_TITLE
    assert titles(fake_discord, first) == [GENERATING_TITLE, READY_TITLE]
    assert titles(fake_discord, second) == [WAITING_TITLE, GENERATING_TITLE, READY_TITLE]

    # A job runs until it is delivered: only then may the member's next one go to kie.ai.
    assert create_call_for(fake_kie, "second boat").at > first_final.at
    assert task_for(fake_kie, "second boat").created_at >= task_for(fake_kie, "first boat").done_at
    assert await running.units_charged() == 2
    assert await running.job_states() == {"delivered": 2}
    assert fake_kie.violations == 0


async def test_a_waiting_job_that_then_fails_is_refunded(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_running_per_member=1, poll_interval=POLL)
    fake_kie.script_next(slow())
    first = await imagine(fake_discord, prompt="first boat")
    await fake_kie.wait_for_tasks(1)
    fake_kie.fail_create_next(CreateFault(code=422, msg="prompt is invalid"))
    second = await imagine(fake_discord, prompt="second boat")
    await shown_waiting(fake_discord, second, 1)
    assert await running.storage.jobs.total_units_charged() == 2

    failed = await final_answer(fake_discord, second)
    assert embed_title(failed) == FAILED_TITLE
    assert "went back" in field(failed, "Quota")
    assert embed_title(await final_answer(fake_discord, first)) == READY_TITLE
    assert await running.units_charged() == 1
    assert await running.job_states() == {"delivered": 1, "refunded": 1}


# --- a server's limit -----------------------------------------------------------------------------


async def test_a_full_server_queues_members_in_order_and_shows_their_place(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(max_running_per_server=2, poll_interval=POLL)
    # The first two end at clearly different times, so each freed place is its own step.
    fake_kie.script_next(slow(0.25), slow(0.5), slow(0.25), slow(0.25))
    prompts = [f"{PROMPT} for member {n}" for n in range(1, 5)]
    first = await imagine(fake_discord, MEMBERS[0], prompts[0])
    await fake_kie.wait_for_tasks(1)
    second = await imagine(fake_discord, MEMBERS[1], prompts[1])
    await fake_kie.wait_for_tasks(2)
    third = await imagine(fake_discord, MEMBERS[2], prompts[2])
    third_waiting = await shown_waiting(fake_discord, third, 1)
    fourth = await imagine(fake_discord, MEMBERS[3], prompts[3])
    fourth_waiting = await shown_waiting(fake_discord, fourth, 2)
    for waiting in (third_waiting, fourth_waiting):
        assert "this server runs 2 at once" in field(waiting, "Queue")
    assert len(fake_kie.calls_to(CREATE)) == 2

    # The first member's image is delivered: the third member goes in, the fourth moves up.
    first_final = await final_answer(fake_discord, first)
    moved_up = await shown_waiting(fake_discord, fourth, 1)
    assert moved_up.at > first_final.at

    finals = [await final_answer(fake_discord, i) for i in (first, second, third, fourth)]
    assert [embed_title(f) for f in finals] == [READY_TITLE] * 4
    assert positions(fake_discord, third) == [1]
    assert positions(fake_discord, fourth) == [2, 1]
    assert titles(fake_discord, fourth)[-2:] == [GENERATING_TITLE, READY_TITLE]

    tasks = fake_kie.created_tasks()
    assert [t.input["prompt"] for t in tasks] == prompts, "first come, first served"
    assert most_at_once(tasks) == 2, "never more than the server's limit at kie.ai"
    assert await running.units_charged() == 4
    assert await running.job_states() == {"delivered": 4}


async def test_a_server_admins_member_limit_applies_to_that_server_only(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(poll_interval=POLL)  # the bot's default: two at once per member
    answer = await admin_command(fake_discord, "server", "limits", {"per_member": 1})
    assert answer.json["flags"] & 64, "admin answers are private"
    fake_kie.script_next(*(slow() for _ in range(4)))

    # Another server keeps the bot's default: one member, two images generating at once.
    elsewhere = fake_discord.guild_id + 1
    other_first = await imagine(fake_discord, prompt="elsewhere one", guild_id=elsewhere)
    other_second = await imagine(fake_discord, prompt="elsewhere two", guild_id=elsewhere)
    await fake_kie.wait_for_tasks(2)
    assert most_at_once(fake_kie.created_tasks()) == 2

    # Here the admin's limit of one applies to the same member.
    here_first = await imagine(fake_discord, prompt="here one")
    await fake_kie.wait_for_tasks(3)
    here_second = await imagine(fake_discord, prompt="here two")
    waiting = await shown_waiting(fake_discord, here_second, 1)
    assert "you can have 1 running at once" in field(waiting, "Queue")

    everyone = (other_first, other_second, here_first, here_second)
    finals = [await final_answer(fake_discord, i) for i in everyone]
    assert [embed_title(f) for f in finals] == [READY_TITLE] * 4
    for interaction in (other_first, other_second, here_first):
        assert WAITING_TITLE not in titles(fake_discord, interaction)
    assert create_call_for(fake_kie, "here two").at > finals[2].at
    assert await running.units_charged() == 4


async def test_raising_the_servers_limit_lets_a_waiting_job_start_at_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(max_running_per_server=1, poll_interval=POLL)
    fake_kie.script_next(slow(1.0), slow())
    first = await imagine(fake_discord, MEMBERS[0], "first boat")
    await fake_kie.wait_for_tasks(1)
    second = await imagine(fake_discord, MEMBERS[1], "second boat")
    await shown_waiting(fake_discord, second, 1)

    await admin_command(fake_discord, "server", "limits", {"server": 2})
    await fake_kie.wait_for_tasks(2)
    first_task, second_task = fake_kie.created_tasks()
    assert second_task.created_at < first_task.done_at, "the freed place is used at once"
    for interaction in (first, second):
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE


async def test_under_the_limits_nobody_is_shown_a_waiting_reply(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(poll_interval=POLL)  # two at once per member, twenty per server
    fake_kie.script_next(slow(), slow(), slow())
    interactions = [
        await imagine(fake_discord, MEMBERS[0], "mine one"),
        await imagine(fake_discord, MEMBERS[0], "mine two"),
        await imagine(fake_discord, MEMBERS[1], "someone else's"),
    ]
    await fake_kie.wait_for_tasks(3)
    assert most_at_once(fake_kie.created_tasks()) == 3
    for interaction in interactions:
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
        # The happy path: the defer, one progress edit, the result; nothing about a line.
        edits = original_edits(fake_discord, interaction)
        assert [embed_title(e) for e in edits] == [GENERATING_TITLE, READY_TITLE]
        assert len(fake_discord.calls_for(interaction)) == 3
    assert await running.job_states() == {"delivered": 3}


async def test_a_position_that_moves_while_an_edit_is_on_its_way_is_still_shown(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(max_running_per_server=1, poll_interval=POLL)
    # The first two jobs end 0.25 s apart; the third then runs long enough to be caught.
    fake_kie.script_next(slow(0.25), slow(0.125), slow(0.5), slow(0.1))
    interactions = [
        await imagine(fake_discord, member, f"{PROMPT} {n}")
        for n, member in enumerate(MEMBERS, start=1)
    ]
    last = interactions[-1]
    await shown_waiting(fake_discord, last, 3)
    # Discord holds the last member's next edit (position 2) back for half a second; the line
    # moves again meanwhile. The newest position must still reach the member.
    fake_discord.rate_limit_next("PATCH", f"{last.token}/messages/@original", retry_after=0.5)
    await shown_waiting(fake_discord, last, 1, timeout=5)
    assert len(fake_kie.created_tasks()) < 4, "position 1 is shown while the job still waits"
    for interaction in interactions:
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE


# --- restarts -------------------------------------------------------------------------------------


async def test_a_waiting_job_survives_a_restart_and_still_waits_its_turn(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    before = await start_bot(max_running_per_member=1, poll_interval=POLL)
    fake_kie.script_next(slow(0.5), slow())
    first = await imagine(fake_discord, prompt="first boat")
    await fake_kie.wait_for_tasks(1)
    second = await imagine(fake_discord, prompt="second boat")
    await shown_waiting(fake_discord, second, 1)
    await before.bot.close()
    assert len(fake_kie.calls_to(CREATE)) == 1

    after = await start_bot(max_running_per_member=1, poll_interval=POLL)
    first_final = await final_answer(fake_discord, first)
    second_final = await final_answer(fake_discord, second)
    assert embed_title(first_final) == READY_TITLE
    assert embed_title(second_final) == READY_TITLE
    # The resumed first job still counts: the second goes to kie.ai only after its delivery.
    assert create_call_for(fake_kie, "second boat").at > first_final.at
    assert len(fake_kie.calls_to(CREATE)) == 2, "nothing submitted twice"
    for interaction in (first, second):
        assert titles(fake_discord, interaction).count(READY_TITLE) == 1, "delivered once"
    assert await after.units_charged() == 2
    assert await after.job_states() == {"delivered": 2}
    # A waiting job hears nothing at shutdown; after the restart it shows its place again.
    assert titles(fake_discord, second)[-3:] == [WAITING_TITLE, GENERATING_TITLE, READY_TITLE]
