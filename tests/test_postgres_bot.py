"""The whole bot on PostgreSQL, always (the rest of the suite does so with
`IMAGINE_TEST_BACKEND=postgres`; restarts that resume jobs are tests/test_durability.py's, on
both backends): a /imagine end to end, and `python -m bot` with DATABASE_URL, which never shows
its password and runs beside a second bot on the same database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bot.settings import Settings
from bot.store import PostgresTarget
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie
from tests.helpers import (
    READY_TITLE,
    bot_environment,
    bot_process,
    embed_title,
    eventually,
    final_answer,
)

# The same tests as on SQLite, collected here again with this module's `settings` (the
# restarts of tests/test_durability.py run on both backends there).
from tests.test_imagine import (  # noqa: F401
    test_an_image_is_generated_and_delivered_in_the_same_reply,
    test_twenty_simultaneous_commands_race_for_the_last_units,
)

PASSWORD = "pg-Secret-4417"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(settings: Settings, postgres_target: PostgresTarget) -> Settings:
    return replace(settings, database_url=postgres_target.url)


def _with_password(target: PostgresTarget) -> str:
    # The test server trusts loopback, so any password is accepted: enough to see it hidden.
    return target.url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


async def test_python_m_bot_on_database_url_serves_and_shows_only_host_and_database(
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    postgres_target: PostgresTarget,
    tmp_path: Path,
) -> None:
    env = bot_environment(
        fake_discord,
        fake_kie,
        tmp_path / "data" / "imagine.db",
        DATABASE_URL=_with_password(postgres_target),
        POLL_INTERVAL_SECONDS="0.2",
        LOG_LEVEL="DEBUG",
        WEBHOOK_PORT="0",
    )
    first = await bot_process(env, tmp_path)
    try:
        await fake_discord.wait_until_ready(20)
        imagine = await fake_discord.send_interaction("imagine", {"prompt": "a quiet harbour"})
        final = await final_answer(fake_discord, imagine, 20)
        assert embed_title(final) == READY_TITLE

        # A second bot on the same database runs beside it (cluster mode): each job is leased
        # to one of them. The fake sends interactions to the newest connection: the second.
        identified = fake_discord.identify_count
        second = await bot_process(env, tmp_path)
        try:
            await eventually(
                lambda: fake_discord.identify_count > identified, 30, what="the second IDENTIFY"
            )
            again = await fake_discord.send_interaction("imagine", {"prompt": "a busy harbour"})
            assert embed_title(await final_answer(fake_discord, again, 20)) == READY_TITLE
            second.terminate()
            out, _ = await asyncio.wait_for(second.communicate(), 20)
            assert second.returncode == 0
            assert PASSWORD not in out.decode()
        finally:
            if second.returncode is None:
                second.kill()
                await second.wait()
        assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 2

        first.terminate()
        assert await asyncio.wait_for(first.wait(), 20) == 0
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    output = (await first.stdout.read()).decode() if first.stdout else ""
    assert f"database: DATABASE_URL ({postgres_target.safe})" in output
    assert PASSWORD not in output
    assert not (tmp_path / "data" / "imagine.db").exists(), "no SQLite file on PostgreSQL"


async def test_an_unreachable_database_url_stops_the_bot_with_one_sentence(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    url = f"postgresql://bot:{PASSWORD}@127.0.0.1:1/imagine"
    env = bot_environment(fake_discord, fake_kie, tmp_path / "imagine.db", DATABASE_URL=url)
    process = await bot_process(env, tmp_path, merged=False)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    (line,) = err.decode().strip().splitlines()
    assert line.startswith("imagine-bot: DATABASE_URL cannot be used: postgresql://127.0.0.1:1/")
    assert PASSWORD not in line + out.decode()


def test_the_backup_command_points_postgresql_users_to_pg_dump(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"postgresql://bot:{PASSWORD}@db/imagine"}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "backup", str(tmp_path / "copy.db")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pg_dump" in result.stderr and PASSWORD not in result.stderr + result.stdout
    assert not (tmp_path / "copy.db").exists()
