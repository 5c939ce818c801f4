"""`/metrics` over HTTP, and who may read it.

Not public by default: without `METRICS_TOKEN` only loopback addresses get an answer (Prometheus
on the same host, or `curl` in the container). With a token, every request must carry
`Authorization: Bearer <token>`, loopback included: a reverse proxy on the same host, the usual
way to put the callback port on https, makes every outsider look local. The token is compared in
constant time and never logged. `METRICS_PORT` gives `/metrics` a server of its own (on
`METRICS_HOST`, loopback by default), so the public callback port need not serve it at all.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from aiohttp import web

from bot.metrics import CONTENT_TYPE_LATEST, Metrics

log = logging.getLogger(__name__)


def is_loopback(remote: str | None) -> bool:
    try:
        address = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return False  # a Unix socket or nothing at all: not known to be local
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def metrics_allowed(remote: str | None, authorization: str | None, token: str | None) -> bool:
    """Whether a request from `remote` with that Authorization header may read the metrics."""
    if token is None:
        return is_loopback(remote)
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class MetricsEndpoint:
    """The `/metrics` handler: the access check, then the registry in Prometheus' text format."""

    def __init__(self, metrics: Metrics, token: str | None) -> None:
        self._metrics = metrics
        self._token = token or None
        self.refused = 0

    def __repr__(self) -> str:  # never show the token
        return f"MetricsEndpoint(token={'set' if self._token else 'none'})"

    async def handle(self, request: web.Request) -> web.Response:
        if not metrics_allowed(request.remote, request.headers.get("Authorization"), self._token):
            self.refused += 1
            # 401 with a challenge when a token would help; 403 for outsiders without one.
            if self._token is not None:
                return web.Response(
                    status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Bearer"}
                )
            return web.Response(status=403, text="forbidden\n")
        body = self._metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


class MetricsServer:
    """`/metrics` on a port of its own (`METRICS_PORT`), for operators who keep the callback
    port free of it. Plain aiohttp: it listens on `METRICS_HOST`, loopback by default."""

    def __init__(self, endpoint: MetricsEndpoint, *, host: str, port: int) -> None:
        self._endpoint = endpoint
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        server = self._site._server if self._site is not None else None
        sockets = getattr(server, "sockets", None)
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._endpoint.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await self._site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = self._site = None
            raise
        log.info("metrics server listening on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None
