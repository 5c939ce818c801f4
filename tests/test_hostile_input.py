"""Hostile members and faults: each attack the bot must withstand, as a regression test.

The README's "What the bot withstands" table lists the same attacks and what the bot does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import pytest
from aiohttp import web

from bot.__main__ import build_kie_client, build_webhook_server, database_target, http_session
from bot.domain import ImageRequest, Job, JobState, NewJob, SpendLimits
from bot.kie import KieMalformedResponse
from bot.settings import Settings, SettingsError, bind_host, load_settings
from bot.store import open_storage
from tests.conftest import StartBot, free_port
from tests.fakes.discord_server import FakeDiscord, RecordedRequest
from tests.fakes.kie_server import TINY_PNG, FakeKie, TaskScript
from tests.helpers import (
    ADMIN_PERMISSIONS,
    FAILED_TITLE,
    READY_TITLE,
    admin_command,
    answer_text,
    bot_environment,
    bot_process,
    embed_of,
    embed_title,
    eventually,
    final_answer,
    nothing_else_happens,
)
from tests.test_durability import (
    _wait_channel_posts,
    create_task_directly,
    seed_job,
    wait_for_state,
)

MEMBER = 4242
PROMPT = "a quiet harbour at dawn"


async def imagine(fake: FakeDiscord, prompt: str = PROMPT, **kwargs: Any) -> RecordedRequest:
    kwargs.setdefault("user_id", MEMBER)
    interaction = await fake.send_interaction("imagine", {"prompt": prompt}, **kwargs)
    return await final_answer(fake, interaction)


async def set_audit_channel(fake: FakeDiscord) -> int:
    audit = fake.channel_id
    channel = {"id": str(audit), "type": 0, "name": "audit", "permissions": ADMIN_PERMISSIONS}
    await admin_command(
        fake,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit)}},
        resolved={"channels": {str(audit): channel}},
    )
    return audit


def channel_posts(fake: FakeDiscord, channel_id: int) -> list[RecordedRequest]:
    path = f"/channels/{channel_id}/messages"
    return [r for r in fake.requests if r.method == "POST" and r.path == path]


# --- moderation -----------------------------------------------------------------------------------


async def test_a_member_repeating_a_blocked_prompt_writes_one_post_and_one_row_not_one_each(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    audit = await set_audit_channel(fake_discord)
    await admin_command(fake_discord, "moderation", "block", {"term": "gore"})
    before = len(channel_posts(fake_discord, audit))
    for _ in range(6):
        assert "blocked: **gore**" in answer_text(await imagine(fake_discord, "so much gore"))
    today = running.bot.quota.today()

    async def counted() -> bool:
        return await running.storage.moderation.refusals_on(today) == {
            fake_discord.guild_id: {"blocked_term": 6}
        }

    await eventually(counted)  # counted just after each answer went out
    events = await running.storage.moderation.moderation_events(fake_discord.guild_id)
    assert [kind for kind, _, _ in events].count("refused_blocked_term") == 1
    assert len(channel_posts(fake_discord, audit)) - before == 1
    assert fake_kie.created_tasks() == []


async def test_mentioning_the_bot_with_help_gets_no_answer_anywhere(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot()
    for text in ("help", "!help", "help imagine"):
        await fake_discord.send_message(text)
    await nothing_else_happens(fake_discord)  # a prefix command would have answered
    assert channel_posts(fake_discord, fake_discord.channel_id) == []


async def test_links_timestamps_and_command_mentions_in_a_prompt_are_shown_inert(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot()
    prompt = (
        "free nitro at https://evil.example/login or discord.gg/scam, "
        "[click here](http://evil.example) </imagine:123> <t:1893456000:R> <#42> <:pog:99>"
    )
    final = await imagine(fake_discord, prompt)
    assert embed_title(final) == READY_TITLE
    shown = embed_of(final)["description"]
    for live in ("https://", "http://", "discord.gg/", "</", "<t:", "<#", "<:"):
        assert live not in shown, live
    assert "\\[click here]" in shown, "a masked link is escaped"
    for word in ("free nitro", "evil", "click here", "imagine:123"):
        assert word in shown.replace("\u200b", "").replace("\\", ""), word


async def test_a_role_quota_on_everyone_applies_to_every_member(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(daily_quota=5)
    everyone = fake_discord.guild_id  # @everyone shares the server's id
    await admin_command(
        fake_discord,
        "server",
        "role-quota",
        {"role": {"type": 8, "value": str(everyone)}, "units": 1},
        resolved=fake_discord.resolved_roles(everyone),
    )
    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    assert "0 of your 1 daily units left" in answer_text(await imagine(fake_discord))
    assert len(fake_kie.created_tasks()) == 1


# --- delivery and the ledger under faults ---------------------------------------------------------


async def test_a_dropped_audit_post_after_delivery_leaves_the_image_delivered_and_charged(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    audit = await set_audit_channel(fake_discord)
    fake_discord.drop_next("POST", f"/channels/{audit}/messages", count=20)
    final = await imagine(fake_discord)
    assert embed_title(final) == READY_TITLE
    await running.idle()
    assert await running.job_states() == {"delivered": 1}
    assert await running.units_charged() == 1
    originals = [r for r in fake_discord.requests if r.path.endswith("/messages/@original")]
    assert all("No image this time" not in str(r.json) for r in originals)


async def seed_job_submitted_before_an_outage(
    settings: Settings, fake_discord: FakeDiscord, task_id: str
) -> int:
    """A job submitted two hours ago, before the bot went down: its 10-minute deadline (and its
    interaction token) passed long ago."""
    job_id = await seed_job(
        settings, fake_discord, state=JobState.SUBMITTED, task_id=task_id, token_age=3 * 3600
    )
    store = await open_storage(database_target(settings))
    try:
        # Either backend's database runs the store's SQL (`bot.store.sql.SqlDatabase`).
        await store.backend.execute(  # type: ignore[attr-defined]
            "UPDATE jobs SET submitted_at = ? WHERE id = ?", (time.time() - 2 * 3600, job_id)
        )
    finally:
        await store.close()
    return job_id


async def test_jobs_kie_finished_during_an_outage_longer_than_the_timeout_are_delivered(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, settings: Settings
) -> None:
    task_id = await create_task_directly(fake_kie, TaskScript(step_seconds=0.01))
    await seed_job_submitted_before_an_outage(settings, fake_discord, task_id)
    running = await start_bot(job_timeout=600.0)
    (post,) = await _wait_channel_posts(fake_discord, 1)
    assert embed_title(post) == READY_TITLE, "delivered through the channel: the token expired"
    queries = fake_kie.calls_to("/api/v1/jobs/recordInfo")
    assert queries and queries[0].query["taskId"] == task_id
    assert await running.job_states() == {"delivered": 1}
    assert await running.units_charged() == 1


async def test_a_job_still_running_after_the_outage_times_out_after_one_look(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, settings: Settings
) -> None:
    task_id = await create_task_directly(fake_kie, TaskScript(step_seconds=60))
    job_id = await seed_job_submitted_before_an_outage(settings, fake_discord, task_id)
    running = await start_bot(job_timeout=600.0)
    await wait_for_state(running.storage, job_id, JobState.REFUNDED)
    assert len(fake_kie.calls_to("/api/v1/jobs/recordInfo")) >= 1
    job = await running.storage.jobs.get_job(job_id)
    assert job is not None and job.error is not None and job.error.startswith("timed_out")


# --- secrets and bounds ---------------------------------------------------------------------------


async def _stop_process(process: asyncio.subprocess.Process) -> str:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()
    return (await process.stdout.read()).decode() if process.stdout else ""


async def test_a_debug_log_is_useful_and_holds_no_secret(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    port = free_port()
    database = tmp_path / "imagine.db"
    env = bot_environment(
        fake_discord,
        fake_kie,
        database,
        LOG_LEVEL="DEBUG",
        POLL_INTERVAL_SECONDS="0.2",
        WEBHOOK_PORT=str(port),
        WEBHOOK_HOST="127.0.0.1",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
    )
    process = await bot_process(env, tmp_path)
    try:
        await fake_discord.wait_until_ready(20)
        interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        assert embed_title(await final_answer(fake_discord, interaction, 20)) == READY_TITLE
        (task,) = fake_kie.created_tasks()
        assert task.callback_url is not None
        callback_secret = task.callback_url.rsplit("/", 1)[1]
    finally:
        log = await _stop_process(process)
    assert "job 1 submitted as task" in log, "DEBUG still tells what happened"
    assert "DEBUG" in log
    for secret in (fake_discord.token, fake_kie.api_key, interaction.token, callback_secret):
        assert secret not in log


async def test_a_second_process_on_the_same_database_refuses_to_start(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    database = tmp_path / "imagine.db"
    env = bot_environment(fake_discord, fake_kie, database, WEBHOOK_PORT="0")
    first = await bot_process(env, tmp_path)
    try:
        await fake_discord.wait_until_ready(20)
        second = await bot_process(env, tmp_path)
        assert await asyncio.wait_for(second.wait(), 20) == 2
        output = await _stop_process(second)
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and "DATABASE_PATH" in lines[0] and "in use" in lines[0]
        # The first one goes on serving.
        interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        assert embed_title(await final_answer(fake_discord, interaction, 20)) == READY_TITLE
    finally:
        await _stop_process(first)
    assert len(fake_kie.created_tasks()) == 1


async def test_the_database_and_its_folder_are_private(tmp_path: Path) -> None:
    database = tmp_path / "state" / "imagine.db"
    store = await open_storage(database)
    try:
        job = await store.jobs.reserve(
            NewJob(1, None, None, "2026-12-02", 1, ImageRequest(PROMPT, "1:1", "1K")),
            SpendLimits(5),
        )
        assert isinstance(job, Job)
        assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
        for path in database.parent.iterdir():  # the database, its -wal and -shm files
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DAILY_QUOTA", str(2**63)),
        ("COST_2K", str(2**63)),
        ("MAX_MEMBER_DAILY", "1000000000000"),
        ("SERVER_DAILY_CAP", str(2**70)),
        ("MAX_IMAGE_MB", "99999999"),
        ("MAX_RUNNING_PER_MEMBER", "100000"),
        ("POLL_INTERVAL_SECONDS", "inf"),
        ("DOWNLOAD_TIMEOUT_SECONDS", "nan"),
        ("LOW_CREDITS_WARNING", "1e300"),
    ],
)
def test_every_numeric_setting_has_a_range_checked_at_start(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({"DISCORD_TOKEN": "t", "KIE_API_KEY": "k", name: value})


# --- images ---------------------------------------------------------------------------------------


def huge_png(width: int, height: int, padding: int) -> bytes:
    """A black 1-bit PNG of `width` x `height` pixels that takes only a few KB to store (plus
    `padding` bytes of text), built row by row so making it costs no memory."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes((width + 7) // 8)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"tEXt", b"Comment\x00" + b"x" * padding)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


async def test_an_image_of_too_many_pixels_is_linked_not_decoded(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    bomb = huge_png(9000, 6000, padding=300_000)  # 54 megapixels in about 300 KB
    fake_kie.script_next(TaskScript(image=bomb))
    final = await imagine(fake_discord, attachment_size_limit=200_000)
    assert embed_title(final) == READY_TITLE
    note = next(f["value"] for f in embed_of(final)["fields"] if f["name"] == "Note")
    assert "could not be shrunk to fit" in note, "linked as is: never decoded to re-encode"
    assert not final.files
    assert await running.job_states() == {"delivered": 1}


# --- the web server -------------------------------------------------------------------------------


async def _get(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status


async def _post(url: str, body: bytes) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
        return response.status


async def test_malformed_callbacks_get_a_4xx_and_one_log_line_per_source_a_minute(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = await start_bot(callbacks=True)
    base = running.settings.public_base_url
    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    job = await running.storage.jobs.get_job(1)
    assert job is not None
    valid_path = f"{base}/kie/callback/{job.id}/{job.callback_token}"
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    statuses = [
        await _post(f"{base}/kie/callback/{'9' * 20}/{job.callback_token}", b"{}"),
        await _post(f"{base}/kie/callback/{'9' * 18}/{job.callback_token}", b"{}"),
        await _post(valid_path, b"[" * 100_000 + b"]" * 100_000),
        await _post(valid_path, b"not json"),
        await _post(valid_path, b"[" + b"[]," * 80_000 + b"[]]"),  # slow to parse: refused
        await _post(valid_path, b'{"data": {"taskId": "someone-elses"}}'),
        *[await _post(f"{base}/kie/callback/{n}/forged", b"{}") for n in range(2, 40)],
    ]
    assert all(400 <= status < 500 for status in statuses), statuses
    lines = [r for r in caplog.records if r.name == "bot.webhook"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert len(lines[0].getMessage()) < 200
    assert not [r for r in caplog.records if r.exc_info], "no traceback for outsiders' input"
    # Counted, not logged (the 20-digit id never even matches the route).
    assert running.server is not None and running.server.callbacks_refused == len(statuses) - 1


async def test_malformed_http_gets_no_traceback_in_the_log(
    start_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_bot(callbacks=True)
    assert running.server is not None
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bot\r\nthis is no header\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(1000), 5)
        assert answer.split(b" ")[1] == b"400"
        writer.close()
    assert not [r for r in caplog.records if r.exc_info], "no traceback for outsiders' input"
    assert len([r for r in caplog.records if r.name == "bot.webhook"]) == 1


async def test_without_callbacks_the_web_server_listens_on_loopback_only(
    settings: Settings, start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    port = free_port()
    server = build_webhook_server(replace(settings, webhook_port=port), running.bot)
    assert server is not None
    await server.start()
    try:
        assert server.bound_addresses() == ["127.0.0.1"]
        assert await _get(f"http://127.0.0.1:{port}/healthz") == 200
        assert await _post(f"http://127.0.0.1:{port}/kie/callback/1/x", b"{}") == 404
    finally:
        await server.stop()
    with_callbacks = replace(settings, webhook_port=port, public_base_url="https://bot.example")
    assert bind_host(with_callbacks) == "0.0.0.0"


@pytest.mark.sqlite_only  # holds the SQLite file's lock
async def test_readiness_fails_while_the_database_cannot_be_written_but_liveness_holds(
    start_bot: StartBot, fake_discord: FakeDiscord, settings: Settings
) -> None:
    running = await start_bot(callbacks=True)
    base = running.settings.public_base_url
    await asyncio.wait_for(running.bot.wait_until_ready(), 10)
    assert await _get(f"{base}/readyz") == 200
    async with aiosqlite.connect(running.settings.database_path) as other:
        await other.execute("BEGIN EXCLUSIVE")
        assert await _get(f"{base}/readyz") == 503
        assert await _get(f"{base}/healthz") == 200, "no restart loop for a busy database"
        await other.rollback()
    assert await _get(f"{base}/readyz") == 200


def _healthcheck(env: dict[str, str]) -> int:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOK_", "DATABASE_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot.healthcheck"], env={**base, **env}, timeout=30
    ).returncode


async def test_the_health_check_follows_webhook_host_and_port(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    port = free_port()
    database = tmp_path / "imagine.db"
    env = bot_environment(
        fake_discord, fake_kie, database, WEBHOOK_PORT=str(port), WEBHOOK_HOST="127.0.0.2"
    )
    process = await bot_process(env, tmp_path)
    try:
        await fake_discord.wait_until_ready(20)
        checks = {"WEBHOOK_PORT": str(port), "WEBHOOK_HOST": "127.0.0.2"}
        assert await asyncio.to_thread(_healthcheck, checks) == 0
    finally:
        await _stop_process(process)
    assert await asyncio.to_thread(_healthcheck, checks) == 1, "nothing answers any more"


async def test_with_webhook_port_0_the_health_check_reads_the_heartbeat(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    database = tmp_path / "imagine.db"
    env = bot_environment(fake_discord, fake_kie, database, WEBHOOK_PORT="0")
    checks = {"WEBHOOK_PORT": "0", "DATABASE_PATH": str(database)}
    assert await asyncio.to_thread(_healthcheck, checks) == 1, "no bot yet"
    process = await bot_process(env, tmp_path)
    try:
        await fake_discord.wait_until_ready(20)

        async def passes() -> bool:
            return await asyncio.to_thread(_healthcheck, checks) == 0

        await eventually(passes, 10, what="the health check to pass")
    finally:
        await _stop_process(process)
    alive = database.with_name(database.name + ".alive")
    os.utime(alive, (time.time() - 600, time.time() - 600))
    assert await asyncio.to_thread(_healthcheck, checks) == 1, "a stale heartbeat fails"


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


async def test_1500_slow_clients_cannot_stop_the_bot_from_working(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    port = free_port()
    env = bot_environment(
        fake_discord,
        fake_kie,
        tmp_path / "imagine.db",
        WEBHOOK_PORT=str(port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        POLL_INTERVAL_SECONDS="0.5",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=_limit_files,  # a 1,024-file process, as in production containers
    )
    writers: list[asyncio.StreamWriter] = []
    try:
        await fake_discord.wait_until_ready(20)
        for _ in range(1500):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue  # refused at the door: that is the point
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bot\r\nX-Slow: ")
            writers.append(writer)
        assert writers, "the slow clients got in"
        interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        assert embed_title(await final_answer(fake_discord, interaction, 30)) == READY_TITLE
        assert await _get(f"http://127.0.0.1:{port}/healthz") == 200
    finally:
        for writer in writers:
            writer.close()
        output = await _stop_process(process)
    assert "Too many open files" not in output


# --- what the bot fetches -------------------------------------------------------------------------


async def _serve(routes: list[web.RouteDef]) -> tuple[web.AppRunner, int]:
    """A little server of the test's own on 127.0.0.1 (which the fakes share, so trusted)."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def _result_at(fake_kie: FakeKie, url: str) -> None:
    """Make the task the bot just submitted report `url` as its result."""
    await fake_kie.wait_for_tasks(1)
    fake_kie.created_tasks()[0].result_urls = [url]


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:{port}/x.png",  # plain http, a name for loopback
        "https://localhost:{port}/x.png",  # https, but loopback all the same
        "https://127.0.0.2:{port}/x.png",  # the loopback range, not the trusted address
        "https://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "https://10.1.2.3/x.png",  # a private network
        "ftp://127.0.0.1:{port}/x.png",  # not http at all
    ],
)
async def test_a_result_url_on_an_internal_address_is_never_fetched(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, url: str
) -> None:
    fetched: list[str] = []

    async def image(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(body=TINY_PNG, content_type="image/png")

    runner, port = await _serve([web.get("/x.png", image)])
    try:
        running = await start_bot()
        fake_kie.script_next(TaskScript(step_seconds=0.3))
        interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        await _result_at(fake_kie, url.format(port=port))
        final = await final_answer(fake_discord, interaction)
        assert embed_title(final) == FAILED_TITLE
        assert fetched == [], "nothing was fetched from an internal address"
        assert await running.units_charged() == 0, "a failed download refunds"
    finally:
        await runner.cleanup()


async def test_every_redirect_hop_is_checked(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fetched: list[str] = []

    async def hop(request: web.Request) -> web.Response:
        fetched.append(request.path)
        raise web.HTTPFound(f"http://localhost:{request.url.port}/x.png")

    async def image(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(body=TINY_PNG, content_type="image/png")

    runner, port = await _serve([web.get("/hop", hop), web.get("/x.png", image)])
    try:
        await start_bot()
        fake_kie.script_next(TaskScript(step_seconds=0.3))
        interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        await _result_at(fake_kie, f"http://127.0.0.1:{port}/hop")
        final = await final_answer(fake_discord, interaction)
        assert "could not download it" in str(embed_of(final))
        assert "/x.png" not in fetched, "the redirect to loopback was not followed"
        assert "/hop" in fetched
    finally:
        await runner.cleanup()


async def test_trusted_download_hosts_may_be_fetched_over_http_on_any_port(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://localhost:{request.url.port}/x.png")

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=TINY_PNG, content_type="image/png")

    runner, port = await _serve([web.get("/hop", hop), web.get("/x.png", image)])
    try:
        await start_bot(trusted_download_hosts=frozenset({"localhost"}))
        fake_kie.script_next(TaskScript(step_seconds=0.3))
        interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        await _result_at(fake_kie, f"http://127.0.0.1:{port}/hop")
        final = await final_answer(fake_discord, interaction)
        assert embed_title(final) == READY_TITLE
        assert final.files and final.files[0].data == TINY_PNG
    finally:
        await runner.cleanup()


async def test_an_oversized_answer_from_kie_is_not_read_whole(tmp_path: Path) -> None:
    async def credit(request: web.Request) -> web.Response:
        padding = "x" * (3 * 1024 * 1024)
        return web.json_response({"code": 200, "msg": "ok", "data": 5, "padding": padding})

    runner, port = await _serve([web.get("/api/v1/chat/credit", credit)])
    try:
        settings = Settings(
            discord_token="t", kie_api_key="k", kie_api_base=f"http://127.0.0.1:{port}"
        )
        async with http_session(settings) as session:
            kie = build_kie_client(session, settings)
            with pytest.raises(KieMalformedResponse):
                await kie.get_credits()
    finally:
        await runner.cleanup()


async def test_an_answer_from_kie_of_countless_tiny_values_is_refused_unparsed(
    tmp_path: Path,
) -> None:
    async def credit(request: web.Request) -> web.Response:
        tiny = b"[" + b"[]," * 300_000 + b"[]]"  # 900 KB that would take 200 ms to parse
        return web.Response(body=b'{"code": 200, "data": 5, "padding": ' + tiny + b"}")

    runner, port = await _serve([web.get("/api/v1/chat/credit", credit)])
    try:
        settings = Settings(
            discord_token="t", kie_api_key="k", kie_api_base=f"http://127.0.0.1:{port}"
        )
        async with http_session(settings) as session:
            kie = build_kie_client(session, settings)
            with pytest.raises(KieMalformedResponse):
                await kie.get_credits()
    finally:
        await runner.cleanup()


async def test_a_slow_result_host_cannot_hold_a_job_past_its_deadline(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for _ in range(600):
            await response.write(b"\x00")
            await asyncio.sleep(0.1)
        return response

    runner, port = await _serve([web.get("/slow.png", trickle)])
    try:
        running = await start_bot(job_timeout=3.0, download_timeout=60.0, min_download=1.0)
        fake_kie.script_next(TaskScript(step_seconds=0.3))
        started = time.monotonic()
        interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        await _result_at(fake_kie, f"http://127.0.0.1:{port}/slow.png")
        final = await final_answer(fake_discord, interaction, timeout=40)
        assert "could not download it" in str(embed_of(final))
        # Within the job's 3 s plus the second any result gets here, not DOWNLOAD_TIMEOUT's 60.
        assert time.monotonic() - started < 15
        assert await running.units_charged() == 0
    finally:
        await runner.cleanup()
