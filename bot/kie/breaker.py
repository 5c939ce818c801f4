"""The circuit breaker around kie.ai: after repeated outages, stop calling until it answers again.

`KieClient` reports every answer to it: an outage (a 5xx, maintenance 455, a timeout, a broken
connection) counts as a failure; any other answer, even a refusal of the request (422, 401,
429, a content rejection), shows that kie.ai is up and resets the count. After `threshold`
failures in a row the breaker opens: new tasks and status polls wait (`wait_closed`), and a
probe (the cheap credit query) is sent after a cool-down that doubles with each failed probe,
up to `max_cooldown`. While the probe is out the breaker is half-open; the first answer that is
not an outage closes it, and everything waiting goes on by itself.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 5
DEFAULT_COOLDOWN = 10.0
MAX_COOLDOWN = 300.0


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # calls go out
    OPEN = "open"  # calls wait; a probe goes out after the cool-down
    HALF_OPEN = "half_open"  # the probe is out; calls still wait for its answer


@dataclass(frozen=True)
class BreakerStatus:
    """What `/readyz` and the metrics show."""

    state: BreakerState
    since: float  # Unix time of the last change of state
    failures: int  # outages in a row (reset by any answer that is not one)

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state.value, "since": self.since, "failures": self.failures}


class CircuitBreaker:
    """One per kie.ai client (so per process), shared by every job and the poll scheduler."""

    def __init__(
        self,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        cooldown: float = DEFAULT_COOLDOWN,
        max_cooldown: float = MAX_COOLDOWN,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._max_cooldown = max(max_cooldown, cooldown)
        self._clock = clock
        self._sleep = sleep
        self._state = BreakerState.CLOSED
        self._since = clock()
        self._failures = 0
        self._probes = 0  # failed probes in this outage: each doubles the next cool-down
        self._closed = asyncio.Event()
        self._closed.set()
        self._probe: Callable[[], Awaitable[object]] | None = None
        self._prober: asyncio.Task[None] | None = None

    def fresh(self) -> CircuitBreaker:
        """A closed breaker with the same thresholds (another account's)."""
        return CircuitBreaker(
            threshold=self._threshold,
            cooldown=self._cooldown,
            max_cooldown=self._max_cooldown,
            clock=self._clock,
            sleep=self._sleep,
        )

    def set_probe(self, probe: Callable[[], Awaitable[object]]) -> None:
        """The cheap call sent while open; its answer reaches `succeeded`/`failed` itself."""
        self._probe = probe

    @property
    def status(self) -> BreakerStatus:
        return BreakerStatus(self._state, self._since, self._failures)

    @property
    def closed(self) -> bool:
        return self._state is BreakerState.CLOSED

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def succeeded(self) -> None:
        """kie.ai answered (whatever it said about the request itself)."""
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            log.warning("kie.ai answers again: circuit breaker closed; waiting work goes on")
            self._state, self._since, self._probes = BreakerState.CLOSED, self._clock(), 0
            self._closed.set()

    def failed(self) -> None:
        """kie.ai had an outage: a 5xx, maintenance, a timeout or a broken connection."""
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self._threshold:
            self._open()
        elif self._state is BreakerState.HALF_OPEN:
            self._probes += 1
            self._open()

    def _open(self) -> None:
        if self._state is BreakerState.CLOSED:
            log.warning(
                "kie.ai: %d outages in a row; circuit breaker open, new tasks wait",
                self._failures,
            )
        self._state, self._since = BreakerState.OPEN, self._clock()
        self._closed.clear()
        if self._prober is None or self._prober.done():
            self._prober = asyncio.create_task(self._probe_until_closed(), name="kie-breaker")

    def cooldown(self) -> float:
        """The wait before the next probe: doubling with each failed probe, capped."""
        return float(min(self._cooldown * 2 ** min(self._probes, 30), self._max_cooldown))

    async def _probe_until_closed(self) -> None:
        while not self.closed:
            if self._state is BreakerState.OPEN:
                await self._sleep(self.cooldown())
            # (`closed`, not `_state`: the sleep may have changed it.)
            if self.closed or self._probe is None:
                continue  # closed meanwhile by a call already on the wire
            self._state, self._since = BreakerState.HALF_OPEN, self._clock()
            try:
                await self._probe()
            except Exception as error:  # the client has told us what kind of failure it was
                log.info("kie.ai probe failed (%s)", type(error).__name__)
            if self._state is BreakerState.HALF_OPEN:
                # An answer that is neither an outage nor a sign of life (a malformed body):
                # no reason to trust kie.ai yet.
                self._probes += 1
                self._state, self._since = BreakerState.OPEN, self._clock()
            else:
                log.info("kie.ai probe answered: breaker %s", self._state.value)

    async def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None
