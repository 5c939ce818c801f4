"""The bot process killed with SIGKILL mid-run, again and again: nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from pathlib import Path

from bot.domain import JobState
from bot.store import DatabaseTarget, PostgresTarget, open_storage
from tests.conftest import free_port
from tests.fakes.discord_server import FakeDiscord, FakeInteraction
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    bot_environment,
    embed_of,
    embed_title,
    eventually,
    is_final,
    is_original_edit,
    nothing_else_happens,
)

ROUNDS = 4
COMMANDS_PER_ROUND = 6


class BotProcess:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self._env = env
        self._cwd = cwd
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            env=self._env,
            cwd=self._cwd,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()  # SIGKILL: no clean-up of any kind
            await self.process.wait()


def final_prompts(fake: FakeDiscord, interactions: list[FakeInteraction]) -> Counter[str]:
    """How many distinct messages show each prompt's final outcome (image or failure)."""
    shown: Counter[str] = Counter()
    for interaction in interactions:
        edits = [
            r
            for r in fake.calls_for(interaction)
            if is_original_edit(r, interaction) and r.status == 200
        ]
        # However often the one reply was edited, it is one message.
        if any(embed_title(e) in (READY_TITLE, FAILED_TITLE) for e in edits):
            shown[interaction_prompt(fake, interaction)] += 1
    # Messages the bot posted outside the interaction (each one really created, not deduped).
    for messages in fake.channel_messages.values():
        for message in messages:
            embeds = message.get("embeds") or [{}]
            if embeds[0].get("title") in (READY_TITLE, FAILED_TITLE):
                shown[embeds[0]["description"]] += 1
    return shown


def interaction_prompt(fake: FakeDiscord, interaction: FakeInteraction) -> str:
    for request in fake.calls_for(interaction):
        if is_original_edit(request, interaction) and request.json and request.json.get("embeds"):
            return embed_of(request)["description"]
    return "?"


async def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path, storage_target: DatabaseTarget
) -> None:
    fake_kie.default_script = TaskScript(step_seconds=0.4)
    database = tmp_path / "imagine.db"
    on_postgres = isinstance(storage_target, PostgresTarget)
    env = bot_environment(
        fake_discord,
        fake_kie,
        database,
        DAILY_QUOTA="100",
        POLL_INTERVAL_SECONDS="0.1",
        WEBHOOK_PORT=str(free_port()),
        **({"DATABASE_URL": storage_target.url} if on_postgres else {}),
    )
    bot = BotProcess(env, tmp_path)
    chance = random.Random(1234)
    interactions: list[FakeInteraction] = []
    try:
        for round_number in range(ROUNDS):
            identified = fake_discord.identify_count
            await bot.start()
            await eventually(lambda n=identified: fake_discord.identify_count > n, 30)
            await fake_discord.wait_until_ready(30)
            for n in range(COMMANDS_PER_ROUND):
                prompt = f"round {round_number} picture {n}"
                interactions.append(
                    await fake_discord.send_interaction(
                        "imagine", {"prompt": prompt}, user_id=500 + n % 3
                    )
                )
                await asyncio.sleep(chance.uniform(0.0, 0.15))
            await asyncio.sleep(chance.uniform(0.05, 1.2))
            await bot.kill()

        # The last start: every open job must now come to an end.
        await bot.start()
        store_target = storage_target if on_postgres else database

        await eventually(
            lambda: len(final_prompts(fake_discord, interactions)) == len(interactions),
            120,  # generous: CI machines are shared; each answer must come once, not fast
            what="a final answer for every interaction",
        )
        # Anything doubled would show up now (the bot is another process: a fixed window).
        await nothing_else_happens(
            fake_discord,
            within=0.5,
            where=lambda r: any(is_final(r, i) for i in interactions),
        )
        shown = final_prompts(fake_discord, interactions)
    finally:
        await bot.kill()

    assert len(shown) == len(interactions), "every interaction has a final answer"
    assert set(shown.values()) == {1}, f"exactly one final answer each: {shown}"

    store = await open_storage(store_target)
    try:
        states = await store.jobs.count_by_state()
        delivered = states.get(JobState.DELIVERED, 0)
        refunded = states.get(JobState.REFUNDED, 0)
        assert delivered + refunded == len(interactions), states
        # 1K images cost one unit: the units charged are exactly the images delivered.
        assert await store.jobs.total_units_charged() == delivered
    finally:
        await store.close()
    prompts = Counter(task.input["prompt"] for task in fake_kie.created_tasks())
    assert all(count == 1 for count in prompts.values()), "no job was submitted twice"
    assert (fake_kie.submit_violations, fake_kie.query_violations) == (0, 0)
    assert delivered >= len(interactions) // 2, "most jobs survive the crashes"
