"""The "thinking…" answer to an image request (`bot/ui/deferral.py`), read at the wire: what
it sends, what it retries within Discord's 3 s, and what it leaves to the caller."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot import generation
from bot.admission import Asker, Refusal
from bot.discord_bot import DISCORD_CONNECTIONS_PER_HOST
from bot.domain import Hold, JobState
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.helpers import READY_TITLE, embed_title, eventually, final_answer

PROMPT = "a lighthouse in a storm, oil painting"


def deferrals(fake: FakeDiscord, interaction: FakeInteraction) -> list[RecordedRequest]:
    return [
        r
        for r in fake.calls_for(interaction)
        if r.path.endswith("/callback") and (r.json or {}).get("type") == 5
    ]


async def test_the_deferral_is_a_plain_thinking_answer_and_the_image_edits_it(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    final = await final_answer(fake_discord, interaction)
    (deferral,) = deferrals(fake_discord, interaction)
    assert deferral.method == "POST" and deferral.json == {"type": 5}
    assert deferral.status == 200
    assert "authorization" not in deferral.headers, "an interaction's token is its credential"
    # discord.py took the deferral as its own: the image is an edit of the same reply.
    assert final.method == "PATCH" and final.path.endswith("/messages/@original")
    assert embed_title(final) == READY_TITLE
    assert await running.job_states() == {"delivered": 1}


@pytest.mark.parametrize(
    "fault",
    ["server error", "rate limited", "connection dropped"],
)
async def test_a_deferral_that_fails_for_a_moment_is_sent_again_and_the_job_runs_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fault: str
) -> None:
    running = await start_bot()
    if fault == "server error":
        fake_discord.fail_next("POST", "/callback", status=503, code=0, message="unavailable")
    elif fault == "rate limited":
        fake_discord.rate_limit_next("POST", "/callback", retry_after=0.2)
    else:
        fake_discord.drop_next("POST", "/callback")
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    final = await final_answer(fake_discord, interaction)
    failed, answered = deferrals(fake_discord, interaction)
    assert failed.status != 200 and answered.status == 200
    assert final.path.endswith("/messages/@original")
    assert await running.job_states() == {"delivered": 1}
    assert len(fake_discord.calls_for(interaction)) <= 6


async def test_an_expired_interaction_is_not_deferred_twice(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    fake_discord.fail_next("POST", "/callback", status=404, code=10062)
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})

    # Charged before the answer failed: the job still runs, and its image is delivered or
    # its units refunded, never lost.
    async def settled() -> bool:
        states = await running.storage.jobs.count_by_state()
        return set(states) in ({JobState.DELIVERED}, {JobState.REFUNDED})

    await eventually(settled, 15, what="the job delivered or refunded")
    (deferral,) = deferrals(fake_discord, interaction)
    assert deferral.status == 404
    assert sum((await running.job_states()).values()) == 1


@pytest.mark.parametrize(("ahead", "charge_waits"), [(0, True), (40, False)])
async def test_a_charge_far_back_in_line_waits_for_the_commands_still_unanswered(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    monkeypatch: pytest.MonkeyPatch,
    ahead: int,
    charge_waits: bool,
) -> None:
    # With `ahead` jobs already running, a new charge waits while any command is still
    # waiting for its first answer; the first command's checks take a whole second.
    monkeypatch.setattr(generation, "CHARGE_AHEAD", ahead)
    running = await start_bot()
    admission = running.bot.admission
    check = admission.check

    async def slow_for_the_first(asker: Asker, hold: Hold | None = None) -> Refusal | None:
        if asker.prompt == PROMPT:
            await asyncio.sleep(1.0)
        return await check(asker, hold)

    admission.check = slow_for_the_first  # type: ignore[method-assign]
    slow = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    quick = await fake_discord.send_interaction("imagine", {"prompt": PROMPT + ", at dawn"})
    await eventually(lambda: fake_discord.ack_latency(quick) is not None, what="quick deferral")

    async def charged() -> int:
        return sum((await running.storage.jobs.count_by_state()).values())

    if charge_waits:
        await asyncio.sleep(0.3)
        assert fake_discord.ack_latency(slow) is None, "the first command is still unanswered"
        assert await charged() == 0, "nothing is charged while a command waits for its answer"
    else:
        await eventually(lambda: charged(), what="the quick command's charge")
        assert fake_discord.ack_latency(slow) is None
    # Either way both are charged once, and both images delivered.
    for interaction in (slow, quick):
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    assert await running.job_states() == {"delivered": 2}


async def test_a_command_starts_no_listener_task_of_its_own(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    # discord.py starts a task per `on_interaction` listener for every interaction; the Edit
    # form listens for form submissions alone (`form_submitted`), so a command starts none.
    running = await start_bot()
    assert not running.bot.extra_events.get("on_interaction")
    assert running.bot.extra_events.get("on_form_submitted")
    started: list[str] = []
    loop = asyncio.get_running_loop()
    default_factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        started.append(kwargs.get("name") or "")
        if default_factory is not None:
            return default_factory(loop, coro, **kwargs)  # type: ignore[no-any-return]
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        await final_answer(fake_discord, interaction)
    finally:
        loop.set_task_factory(default_factory)
    assert started, "the command's own tasks were seen"
    assert not [name for name in started if "on_interaction" in name]


async def test_a_turn_gives_way_once_its_answer_is_written_not_when_discord_replies(
    start_bot: StartBot, fake_discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One command checked at a time, and Discord's replies held back (a network's round trip,
    # made as long as the test likes): every command's answer still reaches Discord, because
    # a turn is given up once its answer is written. Held through the reply, the first turn
    # would keep the other four from ever being answered.
    monkeypatch.setattr(generation, "ADMISSIONS_AT_ONCE", 1)
    running = await start_bot()
    replies = asyncio.Event()
    fake_discord.callback_replies_wait_for = replies
    sent = [
        await fake_discord.send_interaction("imagine", {"prompt": f"{PROMPT}, take {n}"})
        for n in range(5)
    ]

    def all_deferred() -> bool:
        return all(fake_discord.ack_latency(i) is not None for i in sent)

    await eventually(all_deferred, what="every deferral on the wire before any reply")
    assert running.bot.generation.unanswered, "none counts as answered before Discord replies"
    replies.set()
    for interaction in sent:
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    assert not running.bot.generation.unanswered
    assert await running.job_states() == {"delivered": 5}


async def test_discord_py_s_calls_share_a_bounded_number_of_connections(
    start_bot: StartBot,
) -> None:
    # discord.py's default connector opens as many connections as there are calls at once; a
    # burst's waiting edits, let go together, would open hundreds in one moment. The bot's
    # connector (the one its REST calls use) holds them to DISCORD_CONNECTIONS_PER_HOST: here
    # 100 requests at once to a server that holds every answer reach it on that many.
    running = await start_bot()
    connector = running.bot.http.connector
    assert isinstance(connector, aiohttp.BaseConnector)
    held = asyncio.Event()
    connections: set[object] = set()

    async def hold(request: web.Request) -> web.Response:
        connections.add(request.transport)
        await held.wait()
        return web.Response(text="{}", content_type="application/json")

    app = web.Application()
    app.router.add_get("/held", hold)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(connector=connector, connector_owner=False) as session:

            async def get() -> int:
                async with session.get(f"http://127.0.0.1:{port}/held") as response:
                    return response.status

            calls = asyncio.gather(*(get() for _ in range(100)))
            await eventually(
                lambda: len(connections) >= DISCORD_CONNECTIONS_PER_HOST, what="connections"
            )
            await asyncio.sleep(0.2)  # time for any more to arrive
            assert len(connections) == DISCORD_CONNECTIONS_PER_HOST
            held.set()
            assert set(await calls) == {200}
    finally:
        held.set()
        await runner.cleanup()
