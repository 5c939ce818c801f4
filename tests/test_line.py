"""The line under load: what a long line costs each member in Discord calls, and what it shows.

The real bot against the fake Discord and fake kie.ai, counted at the wire: every request the
fake Discord received for an interaction (its first answer, each edit of the reply) is one call.
kie.ai's limits are scaled down in time (20 tasks per half second instead of per ten seconds,
with the bot told the same), so a long line drains in seconds; nothing else is changed.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time

import pytest

from bot.domain import JobState
from bot.jobs import LINE_EDITS, LineShown
from bot.runqueue import DEFAULT_RUN_SECONDS
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    embed_title,
    eventually,
    field,
    final_answer,
    is_original_edit,
)
from tests.test_fair_use import WAITING_TITLE, queue_position, shown_waiting, slow

SUBMIT_LIMIT = (20, 0.5)  # kie.ai's 20 per 10 s, twenty times faster
QUERY_LIMIT = (100, 1.0)
MOST_CALLS = 6  # the bar: no job costs more, however long the line


def scale_kie(fake_kie: FakeKie) -> None:
    fake_kie.credits = 1_000_000.0
    fake_kie.submit_limit, fake_kie.submit_window = SUBMIT_LIMIT
    fake_kie.query_limit, fake_kie.query_window = QUERY_LIMIT
    fake_kie.default_script = TaskScript(states=["generating", "success"], step_seconds=0.1)


async def burst(fake: FakeDiscord, members: int) -> list[FakeInteraction]:
    """One /imagine from each of `members` members, all at once."""
    return list(
        await asyncio.gather(
            *(
                fake.send_interaction(
                    "imagine", {"prompt": f"a lantern for member {n}"}, user_id=7000 + n
                )
                for n in range(members)
            )
        )
    )


def calls_per_job(fake: FakeDiscord, interactions: list[FakeInteraction]) -> list[int]:
    return [len(fake.calls_for(interaction)) for interaction in interactions]


async def test_sixty_members_in_a_server_that_runs_five_cost_at_most_six_calls_each(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    scale_kie(fake_kie)
    running = await start_bot(
        max_running_per_server=5, submit_limit=SUBMIT_LIMIT, query_limit=QUERY_LIMIT
    )
    interactions = await burst(fake_discord, 60)
    finals = [await final_answer(fake_discord, i, timeout=60) for i in interactions]
    assert [embed_title(f) for f in finals] == [READY_TITLE] * 60
    await running.idle(30)

    calls = calls_per_job(fake_discord, interactions)
    print(f"\n60 members, 5 at once: calls per job {sorted(calls)}")
    assert max(calls) <= MOST_CALLS, sorted(calls)
    waited = [i for i in interactions if shown_places(fake_discord, i)]
    assert len(waited) >= 50, "most of them waited in line"
    assert fake_kie.violations == 0
    assert await running.units_charged() == 60
    assert await running.job_states() == {"delivered": 60}


async def test_two_hundred_members_at_once_with_the_defaults_cost_five_calls_or_fewer(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    scale_kie(fake_kie)
    running = await start_bot(submit_limit=SUBMIT_LIMIT, query_limit=QUERY_LIMIT)
    interactions = await burst(fake_discord, 200)
    finals = [await final_answer(fake_discord, i, timeout=120) for i in interactions]
    assert [embed_title(f) for f in finals] == [READY_TITLE] * 200
    await running.idle(30)

    calls = calls_per_job(fake_discord, interactions)
    print(f"\n200 members, defaults: median {statistics.median(calls)}, max {max(calls)}")
    assert statistics.median(calls) <= 5
    assert max(calls) <= MOST_CALLS
    for interaction in interactions:
        # The place is shown when the job starts waiting and at most once more (when it has
        # halved or the expected start moved by more than a third), however long the line.
        assert len(shown_places(fake_discord, interaction)) <= 2
    assert fake_kie.violations == 0
    assert await running.units_charged() == 200, "quota used equals images delivered"
    assert await running.job_states() == {"delivered": 200}


def shown_places(fake: FakeDiscord, interaction: FakeInteraction) -> list[int]:
    edits = [r for r in fake.calls_for(interaction) if is_original_edit(r, interaction)]
    return [p for p in (queue_position(e) for e in edits if e.status == 200) if p is not None]


async def test_a_waiting_reply_shows_its_true_place_and_a_live_expected_start(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(max_running_per_server=1, poll_interval=0.15)
    fake_kie.script_next(slow(1.0), slow(), slow(), slow())
    first = await fake_discord.send_interaction("imagine", {"prompt": "first"}, user_id=1)
    await fake_kie.wait_for_tasks(1)
    waiting = []
    for place, member in enumerate((2, 3, 4), start=1):
        interaction = await fake_discord.send_interaction(
            "imagine", {"prompt": f"behind {place}"}, user_id=member
        )
        shown = await shown_waiting(fake_discord, interaction, place)
        assert embed_title(shown) == WAITING_TITLE
        expected = re.search(r"expected <t:(\d+):R>", field(shown, "Queue"))
        assert expected, field(shown, "Queue")
        assert int(expected[1]) >= int(time.time()) - 1, "a live countdown to a time to come"
        waiting.append(interaction)
    for interaction in (first, *waiting):
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    for interaction in waiting:
        assert len(fake_discord.calls_for(interaction)) <= MOST_CALLS


async def test_after_a_restart_the_expected_start_comes_from_the_last_runs_not_a_guess(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    """Before this start, jobs took about a second from createTask to delivery: the first member
    waiting behind a running job expects their turn in seconds, not in DEFAULT_RUN_SECONDS."""
    before = await start_bot(max_running_per_server=1, poll_interval=0.1)
    earlier = [
        await fake_discord.send_interaction("imagine", {"prompt": f"earlier {n}"}, user_id=n)
        for n in (1, 2, 3)
    ]
    for interaction in earlier:
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    await before.bot.close()

    await start_bot(max_running_per_server=1, poll_interval=0.1)
    fake_kie.script_next(slow(5.0))  # the running job is long: the member behind it waits
    await fake_discord.send_interaction("imagine", {"prompt": "running"}, user_id=4)
    await fake_kie.wait_for_tasks(4)
    behind = await fake_discord.send_interaction("imagine", {"prompt": "behind"}, user_id=5)
    shown = await shown_waiting(fake_discord, behind, 1)
    expected = re.search(r"expected <t:(\d+):R>", field(shown, "Queue"))
    assert expected, field(shown, "Queue")
    assert int(expected[1]) - time.time() < DEFAULT_RUN_SECONDS / 2, field(shown, "Queue")


async def test_a_shutdown_with_a_long_line_edits_only_started_jobs_and_loses_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    """Jobs still waiting in line are not edited at shutdown (with thousands waiting that would
    take longer than Docker waits): their reply already says they wait, their units stay
    charged, and after the restart they take their place again and are delivered once."""
    scale_kie(fake_kie)
    before = await start_bot(
        max_running_per_server=2, submit_limit=SUBMIT_LIMIT, query_limit=QUERY_LIMIT
    )
    fake_kie.script_next(slow(1.0), slow(1.0))
    interactions = await burst(fake_discord, 30)
    for interaction in interactions[-5:]:
        await fake_discord.wait_for_request(
            lambda r, i=interaction: is_original_edit(r, i) and queue_position(r) is not None
        )
    await fake_kie.wait_for_tasks(2)

    async def both_submitted() -> bool:
        states = await before.storage.jobs.count_by_state()
        return states.get(JobState.SUBMITTED, 0) == 2

    await eventually(both_submitted, what="the two running jobs to be recorded as submitted")
    started = {
        job.reply.token
        for job in await before.storage.jobs.open_jobs()
        if job.state is JobState.SUBMITTED and job.reply is not None
    }
    sent_before = len(fake_discord.requests)
    await before.bot.close()
    at_shutdown = [r for r in fake_discord.requests[sent_before:] if r.method == "PATCH"]
    paused = [r for r in at_shutdown if embed_title(r).startswith("⏸️")]
    assert len(paused) <= 2, "only the two started jobs hear about the restart"
    # Edits already on their way when the stop began may still land: a place in line, or a
    # started job's progress ("generating"); no waiting job is edited otherwise.
    others = [r for r in at_shutdown if r not in paused and not any(t in r.path for t in started)]
    assert len(others) <= 2 and all(queue_position(r) is not None for r in others), others
    assert all(embed_title(r) != FAILED_TITLE for r in at_shutdown), "nothing refunded"
    assert await before.storage.jobs.total_units_charged() == 30, "the waiting stay charged"

    after = await start_bot(
        max_running_per_server=2, submit_limit=SUBMIT_LIMIT, query_limit=QUERY_LIMIT
    )
    finals = [await final_answer(fake_discord, i, timeout=60) for i in interactions]
    assert [embed_title(f) for f in finals] == [READY_TITLE] * 30
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 30, "nothing submitted twice"
    assert await after.units_charged() == 30
    assert await after.job_states() == {"delivered": 30}
    assert fake_kie.violations == 0


# --- when a place is worth another edit -----------------------------------------------------------

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("position", "eta_in", "worth"),
    [
        (40, 120.0, False),  # moved a little: the live countdown says enough
        (21, 120.0, False),  # not yet half
        (20, 120.0, True),  # halved
        (40, 190.0, True),  # expected start moved by more than a third of the wait shown
        (40, 50.0, True),
        (40, 150.0, False),  # by a quarter: not news
    ],
)
def test_a_place_is_shown_again_when_it_halved_or_its_time_moved_by_a_third(
    position: int, eta_in: float, worth: bool
) -> None:
    shown = LineShown()
    assert shown.worth_showing(40, NOW + 120, NOW), "the first place is always shown"
    shown.note(40, NOW + 120, NOW)
    assert shown.worth_showing(position, NOW + eta_in, NOW) is worth


def test_a_halved_place_is_not_news_once_the_start_is_near() -> None:
    shown = LineShown()
    shown.note(40, NOW + 90, NOW)
    # 50 s later, on time: the countdown says "in 40 seconds"; the new place is not worth a call.
    assert not shown.worth_showing(20, NOW + 90, NOW + 50)
    assert shown.worth_showing(20, NOW + 90, NOW + 25), "65 s ahead: still news"
    near = LineShown()
    near.note(2, NOW + 10, NOW)
    assert near.worth_showing(1, NOW + 10, NOW + 5), "next in line is always news"


def test_a_short_wait_is_not_edited_for_a_few_seconds_of_drift() -> None:
    shown = LineShown()
    shown.note(3, NOW + 6, NOW)
    assert not shown.worth_showing(3, NOW + 12, NOW), "6 s of drift on a 6 s wait is no news"


def test_a_job_spends_at_most_two_edits_on_its_place_however_long_the_line() -> None:
    shown = LineShown()
    edits = 0
    for position in range(1000, 0, -1):
        if shown.worth_showing(position, NOW + position, NOW):
            shown.note(position, NOW + position, NOW)
            edits += 1
    assert edits == LINE_EDITS == 2
