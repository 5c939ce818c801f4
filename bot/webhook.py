"""The bot's small HTTP server: kie.ai task callbacks and a health check.

A callback is only a wake-up call. The bot never trusts its body: it checks the unguessable
per-job path (and kie.ai's signature, when a key is set), then lets the job re-read the task
from kie.ai with its own key. A forged, replayed or malformed callback changes nothing and costs
one database look-up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from bot.kie import parse_credits
from bot.polling import PollScheduler
from bot.store import OPEN_STATES, Store

log = logging.getLogger(__name__)

CALLBACK_ROUTE = "/kie/callback/{job_id}/{token}"
MAX_CALLBACK_BYTES = 256 * 1024
SIGNATURE_WINDOW = 300.0  # seconds either side of now; kie.ai documents none, so we pick one
_OK = {"code": 200, "msg": "success"}


def callback_task_id(body: Any) -> str | None:
    """kie.ai puts the task id in `data.taskId`, and some pages show `taskId` or `data.task_id`."""
    if not isinstance(body, Mapping):
        return None
    data = body.get("data")
    candidates = [body.get("taskId")]
    if isinstance(data, Mapping):
        candidates = [data.get("taskId"), data.get("task_id"), *candidates]
    return next((c for c in candidates if isinstance(c, str) and c), None)


def signature_valid(
    key: str, task_id: str, timestamp: str, signature: str, now: float, window: float
) -> bool:
    """kie.ai signs `taskId + "." + timestamp` with HMAC-SHA256, base64-encoded."""
    try:
        sent_at = int(timestamp)
        given = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        return False
    if abs(now - sent_at) > window:
        return False
    expected = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(expected, given)


class WebhookServer:
    def __init__(
        self,
        store: Store,
        polls: PollScheduler,
        *,
        host: str,
        port: int,
        hmac_key: str | None,
        health: Callable[[], dict[str, Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._polls = polls
        self._host = host
        self._port = port
        self._hmac_key = hmac_key
        self._health = health
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.callbacks_accepted = 0
        self.callbacks_refused = 0

    def __repr__(self) -> str:  # never show the signing key
        return f"WebhookServer(host={self._host!r}, port={self._port})"

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        if self._runner is None or not self._runner.addresses:
            return self._port
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_CALLBACK_BYTES)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post(CALLBACK_ROUTE, self._callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        log.info("webhook server listening on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        report = self._health()
        status = 200 if report.get("ok") else 503
        return web.json_response(report, status=status)

    async def _callback(self, request: web.Request) -> web.Response:
        # The path is matched before anything else is read: a wrong path costs nothing more.
        try:
            job_id = int(request.match_info["job_id"])
        except ValueError:
            return self._refuse(404, "unknown callback")
        job = await self._store.get_job(job_id)
        if job is None or not hmac.compare_digest(
            job.callback_token.encode(), request.match_info["token"].encode()
        ):
            return self._refuse(404, "unknown callback")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError, web.HTTPRequestEntityTooLarge):
            return self._refuse(400, "malformed callback")
        task_id = callback_task_id(body)
        if task_id is None or (job.task_id is not None and task_id != job.task_id):
            return self._refuse(404, "unknown task")
        if self._hmac_key is not None and not signature_valid(
            self._hmac_key,
            task_id,
            request.headers.get("X-Webhook-Timestamp", ""),
            request.headers.get("X-Webhook-Signature", ""),
            self._clock(),
            SIGNATURE_WINDOW,
        ):
            return self._refuse(401, "bad signature")
        self.callbacks_accepted += 1
        # Only the cost is taken from the body (for the operator's accounts): the path is the
        # job's secret and the task id matched; state and image are re-read from kie.ai.
        credits = parse_credits(body.get("data")) if isinstance(body, dict) else None
        if credits is not None and job.credits is None:
            await self._store.set_job_credits(job.id, credits)
        if job.state in OPEN_STATES:
            log.debug("callback for job %s (task %s): checking it now", job.id, task_id)
            self._polls.wake(job.id)
        return web.json_response(_OK)

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.callbacks_refused += 1
        log.info("refused a callback: %s", reason)
        return web.json_response({"code": status, "msg": reason}, status=status)
