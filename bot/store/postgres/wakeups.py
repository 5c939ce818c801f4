"""Waking a job in whichever bot process runs it, through PostgreSQL's LISTEN/NOTIFY.

In a cluster, kie.ai's callback reaches any process (a load balancer fronts them all), most often
one that does not run the job. That process checks the callback as usual, then NOTIFYs one
channel with the job's id; every process LISTENs on that channel on a connection of its own, and
the one watching the job asks kie.ai about it at once, as it would for a callback of its own.

The payload is the job's id in decimal and nothing else: the callback's token and body never
leave the process that checked them (the job re-reads its task from kie.ai anyway). PostgreSQL
delivers a notification to every listener once its transaction commits, and drops it for a
listener that is not connected at that moment: a job whose wake-up is lost that way is found by
its own next status poll, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.store.postgres.database import PostgresDatabase, PostgresTarget

log = logging.getLogger(__name__)

CHANNEL = "imagine_job_wakeups"
FIRST_RETRY = 0.1  # seconds before the first reconnection; doubled after each failure
LAST_RETRY = 10.0
CHECK_EVERY = 15.0  # seconds between looks at an idle connection (a dead peer sends no FIN)
CHECK_WITHIN = 5.0
CONNECT_WITHIN = 10.0
# The server checks our connection too, so a listener whose machine vanished is dropped.
_KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "application_name": "imagine-bot wakeups",
}


def parse_job_id(payload: str) -> int | None:
    """The job id a notification carries; None for anything else on the channel."""
    if not payload.isascii() or not payload.isdigit() or len(payload) > 18:
        return None
    return int(payload)


class PostgresWakeups:
    """The wake-up channel of one PostgreSQL database: `publish` a job id (through the shared
    pool), and `listen` on a dedicated connection, reconnecting with capped, doubling backoff
    when it drops. One per process, built by `open_storage`; the listener runs as long as the
    bot (`bot.relay.CallbackRelay`)."""

    def __init__(
        self,
        database: PostgresDatabase,
        target: PostgresTarget,
        *,
        channel: str = CHANNEL,
        first_retry: float = FIRST_RETRY,
        last_retry: float = LAST_RETRY,
        check_every: float = CHECK_EVERY,
    ) -> None:
        self._database = database
        self._target = target
        self.channel = channel
        self._first_retry = first_retry
        self._last_retry = last_retry
        self._check_every = check_every
        self.connections = 0  # listening connections made so far (for tests and logs)
        self.listening = asyncio.Event()  # set while a connection listens
        self.backend_pid: int | None = None  # the listening session's server process

    def __repr__(self) -> str:  # the URL holds a password
        return f"PostgresWakeups({self._target.safe!r}, channel={self.channel!r})"

    async def publish(self, job_id: int) -> None:
        """Tell every listening process (this one too) to look at `job_id` now."""
        await self._database.execute("SELECT pg_notify(?, ?)", (self.channel, str(job_id)))

    async def listen(self, on_wake: Callable[[int], None]) -> None:
        """Call `on_wake(job_id)` for each notification, until cancelled."""
        retry = self._first_retry
        while True:
            try:
                await self._listen_once(on_wake)
                retry = self._first_retry  # it had listened: start the backoff afresh
                await asyncio.sleep(retry)
            except Exception as error:  # why broad: the listener must outlive any failure
                expected = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
                log.warning(
                    "wake-up listener on %s: %s; reconnecting in %.1f s",
                    self._target.safe,
                    type(error).__name__,
                    retry,
                    exc_info=not isinstance(error, expected),  # a bug of ours: its traceback
                )
                await asyncio.sleep(retry)
                retry = min(retry * 2, self._last_retry)

    async def _listen_once(self, on_wake: Callable[[int], None]) -> None:
        """One connection's life: returns (or raises) once it is lost."""
        connection = await asyncpg.connect(
            self._target.url, server_settings=_KEEPALIVES, timeout=CONNECT_WITHIN
        )
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())

        def heard(
            _connection: asyncpg.Connection[Any] | PoolConnectionProxy[Any],
            _pid: int,
            _channel: str,
            payload: object,
        ) -> None:
            job_id = parse_job_id(payload) if isinstance(payload, str) else None
            if job_id is not None:
                on_wake(job_id)

        try:
            await connection.add_listener(self.channel, heard)
            self.backend_pid = connection.get_server_pid()
            self.connections += 1
            self.listening.set()
            if self.connections > 1:
                log.info("wake-up listener on %s reconnected", self._target.safe)
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._check_every):
                        await lost.wait()
                if not lost.is_set():
                    # Quiet for a while: make sure the server is still there.
                    async with asyncio.timeout(CHECK_WITHIN):
                        await connection.fetchval("SELECT 1")
            log.warning("wake-up listener on %s lost its connection", self._target.safe)
        finally:
            self.listening.clear()
            self.backend_pid = None
            # Never wait on a connection that may be dead; `close` after a loss is harmless.
            connection.terminate()
