"""The bot's Prometheus metrics: one registry per bot, and the few calls that move them.

Each bot gets its own `CollectorRegistry` (the tests run many bots in one process; the library's
global registry would mix them). The core, the kie.ai client and the Discord side are handed this
object and call its methods; nothing reads a global. Every label has a small, fixed set of values
(outcomes, failure kinds, refusal reasons, kie.ai endpoints, HTTP methods and statuses): never a
member, a server, a prompt or a route with ids in it, so the series stay few however the bot is
used. Values read from elsewhere (queue lengths, a circuit breaker's state) are gauges that call a
function at scrape time (`track`), which costs nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import aiohttp
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Seconds. Waits in line run from nothing to many minutes on a busy day; kie.ai takes seconds to
# minutes; delivery (download, maybe a re-encode, the upload to Discord) takes about a second.
WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
GENERATION_BUCKETS = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0)
DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# The loop lag monitor samples every 50 ms: most samples are a fraction of a millisecond.
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Everything `/metrics` shows, for one bot. Built by the composition root and passed to
    whoever moves a figure; `render` is what the web server answers."""

    def __init__(self) -> None:
        # No `_created` series beside each counter and histogram: in the text format they are
        # gauges of their own, doubling what is scraped for a figure no panel uses. (A library
        # switch; this bot is its only user in the process.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter(
            "imagine_jobs",
            "Jobs finished, by outcome (delivered, refunded, cancelled) and failure kind.",
            ["outcome", "failure"],
            registry=r,
        )
        self.units_charged = Counter(
            "imagine_units_charged", "Units charged when jobs were reserved.", registry=r
        )
        self.units_refunded = Counter(
            "imagine_units_refunded", "Units given back for failed or cancelled jobs.", registry=r
        )
        self.kie_requests = Counter(
            "imagine_kie_requests",
            "HTTP requests to kie.ai, by endpoint and HTTP status ('error': no answer).",
            ["endpoint", "status"],
            registry=r,
        )
        self.rate_limit_waits = Counter(
            "imagine_kie_rate_limit_waits",
            "kie.ai requests that waited for a turn in the bot's own rate limiter, by limit.",
            ["limit"],
            registry=r,
        )
        self.rate_limit_wait_seconds = Counter(
            "imagine_kie_rate_limit_wait_seconds",
            "Seconds requests spent waiting in the bot's kie.ai rate limiter, by limit.",
            ["limit"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "imagine_queue_wait_seconds",
            "From the charge to the task's submission to kie.ai (the bot's line and kie.ai's).",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.generation = Histogram(
            "imagine_generation_seconds",
            "From the submission to kie.ai to the finished task (kie.ai's own time).",
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.delivery_lag = Histogram(
            "imagine_delivery_lag_seconds",
            "From the finished task to the image delivered on Discord.",
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.discord_requests = Counter(
            "imagine_discord_requests",
            "HTTP requests to Discord, by method and status ('error': no answer; 429: limited).",
            ["method", "status"],
            registry=r,
        )
        self._discord_children: dict[tuple[str, str], Counter] = {}
        self.kie_balance = Gauge(
            "imagine_kie_balance_credits",
            "The kie.ai balance when last read, in credits (NaN until read).",
            registry=r,
        )
        self.kie_balance.set(float("nan"))
        self.refusals = Counter(
            "imagine_refusals",
            "Requests refused before any charge, by reason.",
            ["reason"],
            registry=r,
        )
        self.callback_wakes = Counter(
            "imagine_callback_wakes",
            "kie.ai callbacks that woke a job: here (local), passed on to the other processes"
            " (relayed), or passed on by another process to a job here (heard).",
            ["route"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "imagine_event_loop_lag_seconds",
            "How late the event loop ran a 50 ms timer: time it spent busy elsewhere.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self._running = Gauge(
            "imagine_running_jobs",
            "Jobs past the line: sent to kie.ai or being delivered.",
            registry=r,
        )
        self._lines = Gauge(
            "imagine_queue_jobs",
            "Jobs waiting for a running slot (line=running_limit) or for kie.ai (kie_submit).",
            ["line"],
            registry=r,
        )

    def track(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is `read()` at scrape time: a queue's length, a breaker's state."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def track_queues(
        self,
        *,
        running_limit: Callable[[], float],
        kie_submit: Callable[[], float],
        running: Callable[[], float],
    ) -> None:
        """The lines' lengths and the running jobs, read at scrape time."""
        self._lines.labels("running_limit").set_function(running_limit)
        self._lines.labels("kie_submit").set_function(kie_submit)
        self._running.set_function(running)

    def render(self) -> bytes:
        """The text exposition format, for `/metrics`."""
        return generate_latest(self.registry)

    # --- what the rest of the bot reports --------------------------------------------------

    def charged(self, units: int) -> None:
        self.units_charged.inc(units)

    def job_finished(self, outcome: str, failure: str, units_refunded: int) -> None:
        self.jobs.labels(outcome, failure).inc()
        if units_refunded:
            self.units_refunded.inc(units_refunded)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def kie_call(self, endpoint: str, status: str) -> None:
        self.kie_requests.labels(endpoint, status).inc()

    def rate_limit_wait(self, limit: str, seconds: float) -> None:
        self.rate_limit_waits.labels(limit).inc()
        self.rate_limit_wait_seconds.labels(limit).inc(seconds)

    def balance(self, credits: float) -> None:
        self.kie_balance.set(credits)

    def discord_call(self, method: str, status: str) -> None:
        # One child per method and status, looked up once: a burst counts thousands a second.
        child = self._discord_children.get((method, status))
        if child is None:
            child = self._discord_children[method, status] = self.discord_requests.labels(
                method, status
            )
        child.inc()

    def discord_trace(self) -> aiohttp.TraceConfig:
        """For discord.py's `Client(http_trace=...)`: counts every REST request it makes by
        method and status (the route has ids in it: never a label). The gateway's websocket
        is not a REST call and is left out."""
        trace = aiohttp.TraceConfig()

        async def ended(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestEndParams,
        ) -> None:
            if params.url.scheme not in _WEBSOCKET:
                self.discord_call(params.method, str(params.response.status))

        async def failed(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestExceptionParams,
        ) -> None:
            if params.url.scheme not in _WEBSOCKET:
                self.discord_call(params.method, "error")

        trace.on_request_end.append(ended)
        trace.on_request_exception.append(failed)
        return trace


_WEBSOCKET = frozenset({"ws", "wss"})
