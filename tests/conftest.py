"""Fixtures: the fake Discord and fake kie.ai on loopback, and the real bot wired to them."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl

from bot.__main__ import (
    build_bot,
    build_kie_client,
    build_webhook_server,
    database_target,
    event_loop_factory,
    http_session,
)
from bot.discord_bot import ImagineBot
from bot.kie import QUERY_LIMIT, SUBMIT_LIMIT, RetryPolicy
from bot.settings import Settings
from bot.store import DatabaseTarget, PostgresTarget, Storage, open_storage
from bot.store.postgres import PostgresDatabase
from bot.webhook import WebhookServer
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie
from tests.helpers import eventually
from tests.postgres import TEMPLATE, PostgresServer, find_binaries


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every async test runs on the event loop the bot ships with (`event_loop_factory`)."""
    factory = event_loop_factory()
    return {"uvloop": factory} if factory is not None else {"asyncio": asyncio.new_event_loop}


# This machine and CI set PYTHONDONTWRITEBYTECODE. Then every xdist worker rewrites and compiles
# every test module again (2 s of CPU each), every in-process bot start compiles its cogs from
# source (discord.py loads each extension afresh) and every `python -m bot` the whole package:
# a third of the suite's CPU. So this process, the workers it starts and the bots the tests start
# keep bytecode in `__pycache__/` (ignored by git and Docker); only the first run pays.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """After a fresh checkout, rewrite and compile the test modules once, here, before xdist
    starts its workers: each of them would otherwise do it on its own (2 s of CPU apiece)."""
    config = session.config
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    for module in sorted(TESTS.glob("test_*.py")):
        # Named as pytest's assertion rewriter names its bytecode.
        tag = f"{sys.implementation.cache_tag}-pytest-{pytest.__version__}"
        cached = TESTS / "__pycache__" / f"{module.stem}.{tag}.pyc"
        if not cached.exists() or cached.stat().st_mtime < module.stat().st_mtime:
            importlib.import_module(f"tests.{module.stem}")


# Same number of attempts as production, with tiny delays so the tests stay fast.
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fake_kie() -> AsyncIterator[FakeKie]:
    fake = FakeKie()
    await fake.start()
    yield fake
    await fake.stop()


# `IMAGINE_TEST_BACKEND=postgres` runs every bot the tests start on PostgreSQL (a fresh
# database each), not on a SQLite file; tests that look at the SQLite file itself
# (`@pytest.mark.sqlite_only`) stay on it.
BACKEND = os.environ.get("IMAGINE_TEST_BACKEND", "sqlite")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """This test process's own PostgreSQL server, started on first need, with a template
    database already migrated (each test's database is a copy of it)."""
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs it)")
    server = PostgresServer(binaries)
    try:
        server.start()
        server.create_named(TEMPLATE)
        asyncio.run(_migrate(PostgresTarget(server.url(TEMPLATE))))
        yield server
    finally:
        server.stop()


async def _migrate(target: PostgresTarget) -> None:
    database = await PostgresDatabase.open(target)
    await database.close()


@pytest.fixture
def postgres_target(postgres_server: PostgresServer) -> Iterator[PostgresTarget]:
    """A fresh, migrated PostgreSQL database for this test alone."""
    name = postgres_server.create_database(TEMPLATE)
    yield PostgresTarget(postgres_server.url(name))
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def storage_target(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseTarget:
    """Each storage test runs twice: on a SQLite file and on a PostgreSQL database."""
    if request.param == "postgres":
        target: PostgresTarget = request.getfixturevalue("postgres_target")
        return target
    return tmp_path / "nested" / "imagine.db"


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> Settings:
    """Settings as an operator would write them, with test-speed intervals."""
    database_url = None
    if BACKEND == "postgres" and request.node.get_closest_marker("sqlite_only") is None:
        database_url = request.getfixturevalue("postgres_target").url
    return Settings(
        discord_token=fake_discord.token,
        kie_api_key=fake_kie.api_key,
        kie_api_base=fake_kie.base_url,
        kie_upload_base=fake_kie.upload_base_url,
        database_path=tmp_path / "data" / "imagine.db",
        database_url=database_url,
        daily_quota=10,
        poll_interval=0.02,
        progress_min_interval=0.05,
        download_timeout=5.0,
        request_timeout=5.0,
        discord_api_base=fake_discord.api_base,
        discord_gateway_url=fake_discord.gateway_url,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def settings_on_both(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """`settings`, once on SQLite and once on PostgreSQL: a module whose tests are about what
    the database keeps across restarts overrides `settings` with this."""
    if request.param == "postgres":
        return replace(settings, database_url=request.getfixturevalue("postgres_target").url)
    return settings


@dataclass
class RunningBot:
    bot: ImagineBot
    storage: Storage
    settings: Settings
    task: asyncio.Task[None]
    server: WebhookServer | None = None

    async def idle(self, timeout: float = 10) -> None:
        """Wait until every job the bot started has finished its bookkeeping."""
        await eventually(lambda: not self.bot.running_jobs, timeout, what="every job to finish")

    async def job_states(self) -> dict[str, int]:
        await self.idle()
        return {
            state.value: count
            for state, count in (await self.storage.jobs.count_by_state()).items()
        }

    async def units_charged(self) -> int:
        await self.idle()
        return await self.storage.jobs.total_units_charged()


StartBot = Callable[..., Awaitable[RunningBot]]


@pytest.fixture
async def start_bot(
    settings: Settings, fake_discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StartBot]:
    """Start the real bot (real cogs, real database) against the fakes; stop it afterwards."""
    # discord.py has no setting for its endpoints: point it at the fake for this test only.
    monkeypatch.setattr(discord.http.Route, "BASE", fake_discord.api_base)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake_discord.gateway_url)
    )
    cleanups: list[Callable[[], Awaitable[Any]]] = []

    async def start(
        *,
        submit_limit: tuple[int, float] = SUBMIT_LIMIT,
        query_limit: tuple[int, float] = QUERY_LIMIT,
        callbacks: bool = False,
        clock: Callable[[], float] = time.time,
        **overrides: Any,
    ) -> RunningBot:
        if callbacks:
            port = free_port()
            overrides = {
                "public_base_url": f"http://127.0.0.1:{port}",
                "webhook_host": "127.0.0.1",
                "webhook_port": port,
                **overrides,
            }
        run_settings = replace(settings, **overrides)
        session = http_session(run_settings)
        cleanups.append(session.close)
        store = await open_storage(database_target(run_settings))
        cleanups.append(store.close)
        kie = build_kie_client(
            session,
            run_settings,
            submit_limit=submit_limit,
            query_limit=query_limit,
            retry=FAST_RETRY,
        )
        bot = build_bot(run_settings, store, kie, clock=clock)
        server = build_webhook_server(run_settings, bot) if callbacks else None
        if server is not None:
            await server.start()
            cleanups.append(server.stop)
        task = asyncio.create_task(bot.start(run_settings.discord_token))
        cleanups.append(lambda: _stop(bot, task))
        # The gateway session is up once the fake has sent READY; discord.py's own on_ready
        # waits two more seconds for guild streams the bot does not need.
        await fake_discord.wait_until_ready(10)
        return RunningBot(bot, store, run_settings, task, server)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _stop(bot: ImagineBot, task: asyncio.Task[None]) -> None:
    if not bot.is_closed():
        await bot.close()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
