"""`python -m bot` as an operator runs it: a separate process, configured only by environment."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import aiohttp

from tests.conftest import free_port
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie
from tests.helpers import READY_TITLE, bot_environment, embed_title, eventually, final_answer


async def test_the_bot_process_serves_imagine_and_quota_and_stops_cleanly_on_sigterm(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    port = free_port()
    env = bot_environment(
        fake_discord,
        fake_kie,
        tmp_path / "state" / "imagine.db",
        POLL_INTERVAL_SECONDS="0.2",
        LOG_LEVEL="DEBUG",
        WEBHOOK_PORT=str(port),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await fake_discord.wait_until_ready(20)
        imagine = await fake_discord.send_interaction("imagine", {"prompt": "a quiet harbour"})
        final = await final_answer(fake_discord, imagine, 20)
        assert embed_title(final) == READY_TITLE
        assert final.files and final.files[0].data == fake_kie.created_tasks()[0].script.image

        assert await healthy(port), "the Docker health check passes"

        quota = await fake_discord.send_interaction("quota", user_id=imagine.user_id)
        answer = await final_answer(fake_discord, quota, 20)
        assert "used **1** of your **10**" in answer.json["content"]

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = (await process.stdout.read()).decode() if process.stdout else ""
    assert (tmp_path / "state" / "imagine.db").exists()
    assert fake_discord.token not in output
    assert fake_kie.api_key not in output
    assert "event loop: worst stall" in output, "the loop-lag summary is logged at shutdown"


async def healthy(port: int, timeout: float = 10) -> bool:
    """Poll /healthz as Docker's HEALTHCHECK would, until it passes or time runs out."""
    async with aiohttp.ClientSession() as session:

        async def passes() -> bool:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                return response.status == 200

        try:
            await eventually(passes, timeout, what="/healthz to answer 200")
        except TimeoutError:
            return False
        return True


async def test_a_busy_health_check_port_does_not_stop_the_bot(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        env = bot_environment(
            fake_discord,
            fake_kie,
            tmp_path / "imagine.db",
            WEBHOOK_PORT=str(taken.getsockname()[1]),
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
        )
        try:
            await fake_discord.wait_until_ready(20)
            imagine = await fake_discord.send_interaction("imagine", {"prompt": "a busy port"})
            assert embed_title(await final_answer(fake_discord, imagine, 20)) == READY_TITLE
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)
    log = (await process.stderr.read()).decode() if process.stderr else ""
    assert "running without the health check" in log


async def test_json_logs_are_one_object_a_line_with_the_jobs_context_and_no_secret(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    env = bot_environment(
        fake_discord,
        fake_kie,
        tmp_path / "imagine.db",
        POLL_INTERVAL_SECONDS="0.2",
        LOG_LEVEL="DEBUG",
        LOG_FORMAT="json",
        WEBHOOK_PORT="0",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await fake_discord.wait_until_ready(20)
        imagine = await fake_discord.send_interaction("imagine", {"prompt": "a quiet harbour"})
        assert embed_title(await final_answer(fake_discord, imagine, 20)) == READY_TITLE

        def recorded() -> bool:  # the outcome line follows the record of the delivery
            with sqlite3.connect(f"file:{tmp_path / 'imagine.db'}?mode=ro", uri=True) as db:
                return db.execute("SELECT state FROM jobs").fetchall() == [("delivered",)]

        await eventually(recorded, 20)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = (await process.stdout.read()).decode() if process.stdout else ""
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    (delivered,) = [line for line in lines if line.get("outcome") == "delivered"]
    task_id = fake_kie.created_tasks()[0].task_id
    assert delivered["job_id"] == 1 and delivered["task_id"] == task_id
    assert delivered["user_id"] == imagine.user_id
    assert delivered["guild_id"] == fake_discord.guild_id
    assert fake_discord.token not in output and fake_kie.api_key not in output
    assert imagine.token not in output, "interaction tokens are blanked too"
