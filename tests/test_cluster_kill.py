"""Two real bot processes on one PostgreSQL database, one killed with SIGKILL mid-job: the other
takes the job over once its lease runs out and delivers it once (in-process variants, with
commands and alerts, are tests/test_cluster.py's)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bot.store import PostgresTarget
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import (
    READY_TITLE,
    bot_environment,
    bot_process,
    embed_title,
    eventually,
    final_answer,
    original_edits,
)

LEASE = 2.0


async def test_a_process_killed_mid_job_has_its_job_delivered_once_by_another(
    fake_discord: FakeDiscord, fake_kie: FakeKie, postgres_target: PostgresTarget, tmp_path: Path
) -> None:
    fake_kie.script_next(TaskScript(states=["waiting"] * 16 + ["success"], step_seconds=0.5))
    env = bot_environment(
        fake_discord,
        fake_kie,
        tmp_path / "imagine.db",
        DATABASE_URL=postgres_target.url,
        LEASE_SECONDS=str(LEASE),
        POLL_INTERVAL_SECONDS="0.2",
        WEBHOOK_PORT="0",
    )
    processes: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(2):
            identified = fake_discord.identify_count
            processes.append(await bot_process(env, tmp_path, merged=True))
            await eventually(lambda n=identified: fake_discord.identify_count > n, 30)
            if len(processes) == 1:
                # The first gets this one (the fake sends interactions to the newest session).
                interaction = await fake_discord.send_interaction("imagine", {"prompt": "a kite"})
                await fake_kie.wait_for_tasks(1, 20)
        first = processes[0]
        first.kill()  # SIGKILL: no release, no clean-up of any kind
        await first.wait()
        killed_at = time.monotonic()
        final = await final_answer(fake_discord, interaction, 30)
        assert embed_title(final) == READY_TITLE
        assert time.monotonic() - killed_at < LEASE + LEASE / 3 + 10
        assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 1, "never submitted twice"
        images = [
            r for r in original_edits(fake_discord, interaction) if embed_title(r) == READY_TITLE
        ]
        assert len(images) == 1, "delivered exactly once"
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
