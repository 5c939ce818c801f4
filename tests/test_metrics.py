"""/metrics and the job's log lines, read from outside: over HTTP, and from the bot's own output."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.__main__ import build_metrics_server, build_webhook_server
from bot.metrics import Metrics
from bot.metrics_endpoint import metrics_allowed
from bot.settings import Settings
from tests.conftest import StartBot, free_port
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import CreateFault, FakeKie, TaskScript
from tests.helpers import (
    ADMIN,
    READY_TITLE,
    ROOT,
    admin_command,
    answer_text,
    bot_environment,
    bot_is_idle,
    embed_title,
    eventually,
    final_answer,
    is_private,
)

PROMPT = "a lighthouse in a storm, oil painting"
TOKEN = "scrape-me-please-0123456789"

# Every metric the README's "Metrics" section and the dashboard show.
METRIC_NAMES = {
    "imagine_jobs",
    "imagine_units_charged",
    "imagine_units_refunded",
    "imagine_kie_requests",
    "imagine_kie_rate_limit_waits",
    "imagine_kie_rate_limit_wait_seconds",
    "imagine_queue_jobs",
    "imagine_running_jobs",
    "imagine_queue_wait_seconds",
    "imagine_generation_seconds",
    "imagine_delivery_lag_seconds",
    "imagine_discord_requests",
    "imagine_kie_balance_credits",
    "imagine_refusals",
    "imagine_event_loop_lag_seconds",
}


async def _scrape(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.text()


def _samples(text: str) -> dict[str, Any]:
    """name -> {labels (sorted tuple): value}, with the families' names alongside."""
    found: dict[str, Any] = {"families": set()}
    for family in text_string_to_metric_families(text):
        found["families"].add(family.name)
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[key] = sample.value
    return found


def _value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return float(samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0))


# --- the endpoint after a real job ----------------------------------------------------------------


async def test_metrics_count_a_delivered_job_and_a_refusal(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, settings: Settings
) -> None:
    running = await start_bot(daily_quota=1)
    port = free_port()
    server = build_webhook_server(replace(running.settings, webhook_port=port), running.bot)
    assert server is not None
    await server.start()
    try:
        interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
        await running.idle()
        refused = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        assert is_private(await final_answer(fake_discord, refused))
        await eventually(lambda: running.bot.metrics.refusals.labels("quota")._value.get() == 1)

        status, text = await _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        await server.stop()
    assert status == 200
    samples = _samples(text)
    assert samples["families"] >= METRIC_NAMES, METRIC_NAMES - samples["families"]

    assert _value(samples, "imagine_jobs_total", outcome="delivered", failure="") == 1
    assert _value(samples, "imagine_units_charged_total") == 1
    assert _value(samples, "imagine_units_refunded_total") == 0
    assert _value(samples, "imagine_refusals_total", reason="quota") == 1
    assert _value(samples, "imagine_kie_requests_total", endpoint="createTask", status="200") == 1
    assert _value(samples, "imagine_kie_requests_total", endpoint="recordInfo", status="200") >= 1
    assert _value(samples, "imagine_kie_requests_total", endpoint="download", status="200") == 1
    # The defer and the refusal (POST), the result (PATCH); never a route or an id as a label.
    assert _value(samples, "imagine_discord_requests_total", method="POST", status="200") >= 2
    assert _value(samples, "imagine_discord_requests_total", method="PATCH", status="200") >= 1
    discord_labels = {dict(key)["method"] for key in samples["imagine_discord_requests_total"]}
    assert discord_labels <= {"GET", "POST", "PATCH", "PUT", "DELETE"}
    assert _value(samples, "imagine_queue_wait_seconds_count") == 1
    assert _value(samples, "imagine_generation_seconds_count") == 1
    assert _value(samples, "imagine_delivery_lag_seconds_count") == 1
    # The balance check after the job read kie.ai's balance, after the job's cost.
    assert _value(samples, "imagine_kie_balance_credits") == fake_kie.credits
    assert _value(samples, "imagine_queue_jobs", line="running_limit") == 0


async def test_a_failed_job_counts_its_failure_kind_and_refunded_units(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    fake_kie.script_next(TaskScript(states=["fail"]))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    await final_answer(fake_discord, interaction)
    await running.idle()
    samples = _samples(running.bot.metrics.render().decode())
    kind = {"outcome": "refunded", "failure": "generation_failed"}
    assert _value(samples, "imagine_jobs_total", **kind) == 1
    assert _value(samples, "imagine_units_refunded_total") == 1
    assert _value(samples, "imagine_units_charged_total") == 1


async def test_kie_errors_are_counted_by_their_http_status(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    fake_kie.fail_create_next(CreateFault(code=500, msg="Server Error", http_status=500))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    await final_answer(fake_discord, interaction)
    await running.idle()
    samples = _samples(running.bot.metrics.render().decode())
    assert _value(samples, "imagine_kie_requests_total", endpoint="createTask", status="500") == 1
    assert _value(samples, "imagine_kie_requests_total", endpoint="createTask", status="200") == 0
    refunded = {"outcome": "refunded", "failure": "unreachable"}
    assert _value(samples, "imagine_jobs_total", **refunded) == 1


async def test_the_discord_trace_counts_429s_by_method_and_never_the_route() -> None:
    metrics = Metrics()

    async def limited(request: web.Request) -> web.Response:
        return web.json_response({"message": "You are being rate limited."}, status=429)

    app = web.Application()
    app.router.add_post("/api/v10/channels/{channel}/messages", limited)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(trace_configs=[metrics.discord_trace()]) as session:
            for channel in (1, 2):
                url = f"http://127.0.0.1:{port}/api/v10/channels/{channel}/messages"
                async with session.post(url, json={}) as response:
                    assert response.status == 429
    finally:
        await runner.cleanup()
    samples = _samples(metrics.render().decode())
    assert samples["imagine_discord_requests_total"] == {
        (("method", "POST"), ("status", "429")): 2.0
    }


async def test_in_text_a_job_is_one_readable_line(
    start_bot: StartBot, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    running = await start_bot()
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    await running.idle()
    about_the_job = [r for r in caplog.records if getattr(r, "job_id", None) == 1]
    assert len(about_the_job) == 1
    line = about_the_job[0].getMessage()
    assert re.fullmatch(
        r"job 1 delivered by reply: wait \d+\.\d\d s, generation \d+\.\d\d s, "
        r"delivery \d+\.\d\d s; 1 unit, flex \(server \d+, member \d+, task \S+\)",
        line,
    ), line
    assert not [
        r
        for r in caplog.records
        if r.name.startswith("bot") and "job 1 " in r.getMessage() and r is not about_the_job[0]
    ]


async def test_admin_changes_and_refusals_are_logged_once_without_their_words(
    start_bot: StartBot, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    running = await start_bot()
    await admin_command(fake_discord, "server", "quota", {"units": 3})
    await admin_command(fake_discord, "moderation", "block", {"term": "gore"})
    refused = await fake_discord.send_interaction("imagine", {"prompt": "a scene full of gore"})
    assert is_private(await final_answer(fake_discord, refused))
    await eventually(lambda: running.bot.metrics.refusals.labels("blocked_term")._value.get() == 1)
    await bot_is_idle()

    changes = [r for r in caplog.records if getattr(r, "change", None)]
    assert [(r.change, r.guild_id, r.actor_id) for r in changes] == [  # type: ignore[attr-defined]
        ("setting_changed", fake_discord.guild_id, ADMIN),
        ("term_blocked", fake_discord.guild_id, ADMIN),
    ]
    assert "daily_quota=3" in changes[0].getMessage()
    refusals = [r for r in caplog.records if getattr(r, "outcome", None) == "refused"]
    assert [r.reason for r in refusals] == ["blocked_term"]  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if "gore" in r.getMessage()], "no term, no prompt"


async def test_rate_limit_waits_are_counted_with_their_seconds(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(submit_limit=(1, 0.5))
    interactions = [
        await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=100 + n)
        for n in range(2)
    ]
    for interaction in interactions:
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    samples = _samples(running.bot.metrics.render().decode())
    assert _value(samples, "imagine_kie_rate_limit_waits_total", limit="submit") >= 1
    assert _value(samples, "imagine_kie_rate_limit_wait_seconds_total", limit="submit") > 0.1


def test_the_dashboard_shows_every_metric_and_only_real_ones() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "imagine-bot.json").read_text())
    assert {"type": "prometheus", "uid": "${datasource}"} in [
        p["datasource"] for p in dashboard["panels"] if "datasource" in p
    ]
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    exprs = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    )
    shown = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for name in re.findall(r"imagine_[a-z_]+", exprs)
    }
    exported = {
        family.name for family in text_string_to_metric_families(Metrics().render().decode())
    }
    # The circuit breaker's gauges are matched by a pattern; the rest by name, both ways.
    assert shown - {"imagine_"} == exported, shown ^ exported


# --- who may read it ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "authorization", "token", "allowed"),
    [
        ("127.0.0.1", None, None, True),
        ("127.8.9.10", None, None, True),
        ("::1", None, None, True),
        ("::ffff:127.0.0.1", None, None, True),
        ("10.0.0.5", None, None, False),  # a neighbour on the network
        ("203.0.113.7", None, None, False),  # the internet
        ("203.0.113.7", f"Bearer {TOKEN}", None, False),  # no token set: loopback only
        (None, None, None, False),
        ("203.0.113.7", f"Bearer {TOKEN}", TOKEN, True),
        ("203.0.113.7", f"bearer {TOKEN}", TOKEN, True),
        ("203.0.113.7", None, TOKEN, False),
        ("203.0.113.7", "Bearer wrong", TOKEN, False),
        ("203.0.113.7", f"Basic {TOKEN}", TOKEN, False),
        ("203.0.113.7", f"Bearer {TOKEN}x", TOKEN, False),
        # With a token, loopback needs it too: a proxy on the same host makes everyone local.
        ("127.0.0.1", None, TOKEN, False),
        ("127.0.0.1", f"Bearer {TOKEN}", TOKEN, True),
    ],
)
def test_who_may_read_the_metrics(
    remote: str | None, authorization: str | None, token: str | None, allowed: bool
) -> None:
    assert metrics_allowed(remote, authorization, token) is allowed


async def test_with_a_token_metrics_need_it(start_bot: StartBot) -> None:
    running = await start_bot(callbacks=True, metrics_token=TOKEN)
    url = f"{running.settings.public_base_url}/metrics"
    status, text = await _scrape(url)
    assert status == 401 and "imagine_" not in text
    assert (await _scrape(url, "not-the-token"))[0] == 401
    status, text = await _scrape(url, TOKEN)
    assert status == 200 and "imagine_units_charged_total" in text


async def test_metrics_port_moves_metrics_off_the_callback_port(start_bot: StartBot) -> None:
    port = free_port()
    running = await start_bot(callbacks=True, metrics_port=port, metrics_host="127.0.0.1")
    server = build_metrics_server(running.settings, running.bot)
    assert server is not None
    await server.start()
    try:
        assert (await _scrape(f"{running.settings.public_base_url}/metrics"))[0] == 404
        status, text = await _scrape(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "imagine_jobs" in text
    finally:
        await server.stop()


# --- the bot as an operator runs it: JSON logs and /metrics -------------------------------------


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_json_logs_tell_each_outcome_and_refusal_once_without_secrets(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path
) -> None:
    port = free_port()
    env = bot_environment(
        fake_discord,
        fake_kie,
        tmp_path / "imagine.db",
        LOG_LEVEL="DEBUG",
        LOG_FORMAT="json",
        DAILY_QUOTA="1",
        POLL_INTERVAL_SECONDS="0.2",
        WEBHOOK_PORT=str(port),
        WEBHOOK_HOST="127.0.0.1",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        METRICS_TOKEN=TOKEN,
    )
    output = tmp_path / "bot.log"
    with output.open("wb") as sink:  # a file: a full pipe would stall a chatty bot
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", env=env, cwd=tmp_path, stdout=sink, stderr=sink
        )
    try:
        await fake_discord.wait_until_ready(20)
        interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        assert embed_title(await final_answer(fake_discord, interaction, 20)) == READY_TITLE
        refused = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
        assert "quota" in answer_text(await final_answer(fake_discord, refused, 20)).lower()
        (task,) = fake_kie.created_tasks()
        assert task.callback_url is not None
        callback_secret = task.callback_url.rsplit("/", 1)[1]

        async def outcome_counted() -> bool:
            status, text = await _scrape(f"http://127.0.0.1:{port}/metrics", TOKEN)
            return (
                status == 200 and 'imagine_jobs_total{failure="",outcome="delivered"} 1.0' in text
            )

        await eventually(outcome_counted, 10, what="the delivered job in /metrics")
        status, text = await _scrape(f"http://127.0.0.1:{port}/metrics")
        assert status == 401, "a token is set: without it, nothing"
    finally:
        await _stop(process)
    text = output.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines and len(lines) >= len(text.splitlines()) - 2, "every log line is JSON"
    assert any(line["level"] == "DEBUG" for line in lines)

    outcomes = [line for line in lines if line.get("job_id") == 1 and "outcome" in line]
    assert len(outcomes) == 1, outcomes
    (outcome,) = outcomes
    assert outcome["outcome"] == "delivered"
    assert outcome["guild_id"] == fake_discord.guild_id
    assert outcome["user_id"] == interaction.user_id
    assert outcome["task_id"] == task.task_id
    assert outcome["units"] == 1 and outcome["model"] == "flex"
    for figure in ("wait_seconds", "generation_seconds", "delivery_seconds"):
        assert isinstance(outcome[figure], float) and outcome[figure] >= 0
    # The job's other lines are DEBUG: at INFO, a job is one line.
    job_lines = [line for line in lines if line.get("job_id") == 1 and line["level"] != "DEBUG"]
    assert job_lines == [outcome]

    refusals = [line for line in lines if line.get("outcome") == "refused"]
    assert len(refusals) == 1, refusals
    assert refusals[0]["reason"] == "quota"
    assert refusals[0]["guild_id"] == fake_discord.guild_id
    assert PROMPT not in json.dumps(refusals[0])

    for secret in (
        fake_discord.token,
        fake_kie.api_key,
        interaction.token,
        refused.token,
        callback_secret,
        TOKEN,
    ):
        assert secret not in text
