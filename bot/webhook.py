"""The bot's small HTTP server: kie.ai task callbacks, liveness, readiness and `/metrics`.

A callback is only a wake-up call. The bot never trusts its body: it checks the unguessable
per-job path (and kie.ai's signature, when a key is set), then lets the job re-read the task
from kie.ai with its own key. A forged, replayed or malformed callback changes nothing, costs one
database look-up, gets a 4xx, and is counted rather than logged: each source gets at most one
short log line a minute.

The server faces the internet when callbacks are on, so what an outsider can hold is bounded
(`ConnectionGuard`): a few hundred connections at most, far below the process's file limit so
the bot can still reach Discord and kie.ai, a few seconds to send a request's headers and body,
and a bounded lifetime. When full, the connection that has waited longest for its headers makes
room for a new one, so slow clients cannot lock everyone else out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import dataclasses
import hashlib
import hmac
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bot.domain import OPEN_STATES, JobState
from bot.kie import load_json, parse_credits
from bot.metrics_endpoint import MetricsEndpoint
from bot.store import JobLedger

log = logging.getLogger(__name__)

# Job ids fit SQLite's 64-bit integers; tokens are `secrets.token_urlsafe(24)`.
CALLBACK_ROUTE = r"/kie/callback/{job_id:[0-9]{1,18}}/{token:[A-Za-z0-9_\-]{1,64}}"
MAX_CALLBACK_BYTES = 256 * 1024
SIGNATURE_WINDOW = 300.0  # seconds either side of now; kie.ai documents none, so we pick one
HEADER_SECONDS = 5.0  # to send a request's headers, from the moment the connection opens
BODY_SECONDS = 5.0  # to send its body
CONNECTION_LIFETIME = 30.0  # callbacks and health checks take milliseconds
KEEPALIVE_SECONDS = 5.0
MAX_CONNECTIONS = 256
LOG_EVERY = 60.0  # one line per source per minute, at most
_SOURCES_KEPT = 10_000
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


def connection_limit() -> int:
    """Well below the process's file limit: the rest is for Discord, kie.ai and the database."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(MAX_CONNECTIONS, soft // 4))


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's bounds."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.timers: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport (uvloop's does not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)
        if not self.guard.admit(self):
            self.transport.abort()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ConnectionGuard:
    """Bounds the connections outsiders can open and how long each may take."""

    def __init__(
        self,
        *,
        max_connections: int,
        header_seconds: float = HEADER_SECONDS,
        lifetime: float = CONNECTION_LIFETIME,
    ) -> None:
        self.max_connections = max_connections
        self._header_seconds = header_seconds
        self._lifetime = lifetime
        self._open: set[_Guarded] = set()
        # Connections still waiting for their first request's headers, oldest first.
        self._waiting: collections.OrderedDict[_Guarded, None] = collections.OrderedDict()
        self._by_transport: dict[int, _Guarded] = {}
        self.refused = 0
        self.evicted = 0

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(inner(), self)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, conn: _Guarded) -> bool:
        if len(self._open) >= self.max_connections:
            if not self._waiting:
                self.refused += 1
                return False
            oldest, _ = self._waiting.popitem(last=False)
            self._drop(oldest)
            oldest.close()
            self.evicted += 1
        loop = asyncio.get_running_loop()
        self._open.add(conn)
        self._waiting[conn] = None
        assert conn.transport is not None
        self._by_transport[id(conn.transport)] = conn
        conn.timers = [
            loop.call_later(self._header_seconds, self._expire_waiting, conn),
            loop.call_later(self._lifetime, conn.close),
        ]
        return True

    def request_started(self, transport: object) -> None:
        """The connection sent a whole request's headers: it is no slow client."""
        conn = self._by_transport.get(id(transport))
        if conn is not None and conn in self._waiting:
            del self._waiting[conn]
            conn.timers[0].cancel()

    def forget(self, conn: _Guarded) -> None:
        self._drop(conn)

    def close_all(self) -> None:
        for conn in list(self._open):
            conn.close()

    def _expire_waiting(self, conn: _Guarded) -> None:
        if conn in self._waiting:
            conn.close()

    def _drop(self, conn: _Guarded) -> None:
        if conn not in self._open:
            return
        self._open.discard(conn)
        self._waiting.pop(conn, None)
        if conn.transport is not None:
            self._by_transport.pop(id(conn.transport), None)
        for timer in conn.timers:
            timer.cancel()


class SourceLog:
    """At most one log line per source per minute; the rest are counted into the next line."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # source -> (last line, since counted)

    def refused(self, source: str, reason: str) -> None:
        now = self._clock()
        last, counted = self._seen.get(source, (float("-inf"), 0))
        if now - last < LOG_EVERY:
            self._seen[source] = (last, counted + 1)
            return
        if len(self._seen) >= _SOURCES_KEPT:
            self._seen.clear()
        self._seen[source] = (now, 0)
        more = f" (and {counted} more in the last minute)" if counted else ""
        log.info("refused a request from %s: %s%s", source[:64], reason, more)


class QuietBadRequests(logging.Filter):
    """aiohttp logs a traceback for each malformed HTTP request ("Error handling request from
    …"): an outsider could fill the log. Those become one short line per source per minute;
    errors of the bot's own handlers keep their traceback."""

    def __init__(self, sources: SourceLog) -> None:
        super().__init__()
        self._sources = sources

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        source = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        self._sources.refused(source, "malformed HTTP request")
        return False


class Wakes(Protocol):
    """Who wakes a called-back job (`CallbackRelay`): its scheduler here, or, in a cluster,
    whichever process watches it."""

    async def called_back(self, job_id: int) -> None: ...


class WebhookServer:
    """The bot's own small web server: kie.ai's callbacks, `/healthz`, `/readyz` and `/metrics`
    (unless METRICS_PORT gives it a server of its own; `MetricsEndpoint` decides who may read it).

    One per process, started before the bot logs in and stopped last. A callback is trusted only
    through the job's secret path; it is parsed within bounds, its task matched to an open job,
    and the job woken through the poll scheduler, in this process or, in a cluster, the one
    running it (`bot.relay`; the callback is a hint: the job still reads the task's record
    before delivering). Outsiders' connections are bounded by
    `ConnectionGuard`, and their noise in the log by `SourceLog`.
    """

    def __init__(
        self,
        ledger: JobLedger,
        wakes: Wakes,
        *,
        host: str,
        port: int,
        hmac_key: str | None,
        liveness: Callable[[], dict[str, Any]],
        readiness: Callable[[], Awaitable[dict[str, Any]]],
        callbacks: bool = True,
        metrics: MetricsEndpoint | None = None,
        clock: Callable[[], float] = time.time,
        max_connections: int | None = None,
    ) -> None:
        self._ledger = ledger
        self._wakes = wakes
        self._host = host
        self._port = port
        self._hmac_key = hmac_key
        self._liveness = liveness
        self._readiness = readiness
        self._callbacks = callbacks
        self._metrics = metrics  # /metrics here, unless it has a port of its own
        self._clock = clock
        self.guard = ConnectionGuard(max_connections=max_connections or connection_limit())
        self._sources = SourceLog()
        self._quiet = QuietBadRequests(self._sources)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.callbacks_accepted = 0
        self.callbacks_refused = 0

    def __repr__(self) -> str:  # never show the signing key
        return f"WebhookServer(host={self._host!r}, port={self._port})"

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    def bound_addresses(self) -> list[str]:
        """The addresses the server listens on (for tests and the start-up log)."""
        if self._server is None:
            return []
        return [str(sock.getsockname()[0]) for sock in self._server.sockets]

    async def start(self) -> None:
        app = web.Application(
            client_max_size=MAX_CALLBACK_BYTES, middlewares=[self._headers_arrived]
        )
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self._metrics is not None:
            app.router.add_get("/metrics", self._metrics.handle)
        if self._callbacks:
            app.router.add_post(CALLBACK_ROUTE, self._callback)
        self._runner = web.AppRunner(
            app, access_log=None, keepalive_timeout=KEEPALIVE_SECONDS, max_field_size=8190
        )
        await self._runner.setup()
        protocols = self._runner.server
        assert protocols is not None  # set up just above
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                self.guard.factory(protocols),
                self._host,
                self._port,
                reuse_address=True,
                family=socket.AF_UNSPEC,
            )
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        logging.getLogger("aiohttp.server").addFilter(self._quiet)
        log.info("web server listening on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        logging.getLogger("aiohttp.server").removeFilter(self._quiet)
        if self._server is not None:
            self._server.close()
            self.guard.close_all()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _headers_arrived(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        self.guard.request_started(request.transport)
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        """Liveness: the process and its event loop answer. A Discord outage is not a reason
        to restart the container (see /readyz)."""
        return web.json_response({"ok": True, **self._liveness()})

    async def _readyz(self, request: web.Request) -> web.Response:
        """Readiness: connected to Discord, taking work, and the database writable (the JSON also
        shows kie.ai's circuit breaker, which does not make the bot unready)."""
        report = await self._readiness()
        return web.json_response(report, status=200 if report.get("ok") else 503)

    async def _callback(self, request: web.Request) -> web.Response:
        # The path is matched before anything else is read: a wrong path costs nothing more.
        job = await self._ledger.get_job(int(request.match_info["job_id"]))
        if job is None or not hmac.compare_digest(
            job.callback_token.encode(), request.match_info["token"].encode()
        ):
            return self._refuse(request, 404, "unknown callback")
        try:
            async with asyncio.timeout(BODY_SECONDS):
                raw = await request.read()
            body = load_json(raw)
        except TimeoutError:
            return self._refuse(request, 408, "body too slow")
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, 413, "body too large")
        except (ValueError, UnicodeDecodeError, RecursionError):
            return self._refuse(request, 400, "malformed callback")
        task_id = callback_task_id(body)
        if task_id is None or (job.task_id is not None and task_id != job.task_id):
            return self._refuse(request, 404, "unknown task")
        if self._hmac_key is not None and not signature_valid(
            self._hmac_key,
            task_id,
            request.headers.get("X-Webhook-Timestamp", ""),
            request.headers.get("X-Webhook-Signature", ""),
            self._clock(),
            SIGNATURE_WINDOW,
        ):
            return self._refuse(request, 401, "bad signature")
        self.callbacks_accepted += 1
        # Only the cost is taken from the body (for the operator's accounts): the path is the
        # job's secret and the task id matched; state and image are re-read from kie.ai.
        credits = parse_credits(body.get("data")) if isinstance(body, dict) else None
        if credits is not None and job.credits is None:
            await self._ledger.set_job_credits(job.id, credits)
        # A job whose createTask's answer was lost (a stop, a crash, a cut call) learns its
        # task here, and goes on to its image instead of being refunded.
        lost = job.state is JobState.SUBMITTING and job.task_id is None
        if lost and await self._ledger.adopt_task(job.id, task_id):
            log.info("job %s: kie.ai's callback named its task; it goes on", job.id)
            job = dataclasses.replace(job, state=JobState.SUBMITTED, task_id=task_id)
        if job.state in OPEN_STATES:
            log.debug("callback for job %s (task %s): checking it now", job.id, task_id)
            # After the credits above are written: the process woken may read them.
            await self._wakes.called_back(job.id)
        return web.json_response(_OK)

    def _refuse(self, request: web.Request, status: int, reason: str) -> web.Response:
        self.callbacks_refused += 1
        self._sources.refused(request.remote or "?", reason)
        return web.json_response({"code": status, "msg": reason}, status=status)
