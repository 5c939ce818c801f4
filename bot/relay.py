"""Callbacks that land on a process that does not run their job.

kie.ai calls one public address; in a cluster that is a load balancer in front of every process,
so the callback most often reaches one that is not waiting for the job. The webhook checks the
callback as always and hands it here: a job this process watches is woken at once; any other is
relayed through the database's wake-up channel (PostgreSQL NOTIFY) to every process, and the one
that watches it asks kie.ai about it next, as for a callback of its own.

Only "look now" travels, never the callback's body: the job re-reads its task from kie.ai
before it delivers (as it does for a local callback), and its state machine's conditional
transitions deliver or refund it once. A duplicate or late wake-up costs at most one status
query; a lost one (a listener reconnecting) leaves the job to its own next poll, as before.
On SQLite there is one process and no channel: nothing is relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from bot.metrics import Metrics
from bot.store import WakeChannel

log = logging.getLogger(__name__)


class LocalWakes(Protocol):
    """This process's watches (`JobService`): True when one of them waits for the job."""

    def wake(self, job_id: int) -> bool: ...


class CallbackRelay:
    """Wakes a called-back job wherever it runs. One per process, built by the composition
    root; `start` (before jobs resume) listens for the other processes' relays until `stop`."""

    def __init__(
        self, local: LocalWakes, channel: WakeChannel | None, metrics: Metrics | None = None
    ) -> None:
        self._local = local
        self._channel = channel
        self._metrics = metrics
        self._listener: asyncio.Task[None] | None = None
        self.relayed = 0  # callbacks passed on to the other processes
        self.heard = 0  # relayed callbacks that woke a job here

    async def called_back(self, job_id: int) -> None:
        """A checked callback for an open job: wake it here, or tell the other processes."""
        if self._local.wake(job_id):
            self._count("local")
            return
        if self._channel is None:
            return  # one process: nobody else could be waiting for it
        try:
            await self._channel.publish(job_id)
        except Exception as error:  # why broad: whatever the database's failure, the same
            # The job is not lost: its own status poll finds the result, only later.
            log.warning("could not relay the callback for job %s: %s", job_id, error)
            return
        self.relayed += 1
        self._count("relayed")

    def start(self) -> None:
        if self._channel is not None and self._listener is None:
            self._listener = asyncio.create_task(
                self._channel.listen(self._heard), name="callback-relay"
            )

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    def _heard(self, job_id: int) -> None:
        if self._local.wake(job_id):
            self.heard += 1
            self._count("heard")

    def _count(self, route: str) -> None:
        if self._metrics is not None:
            self._metrics.callback_wakes.labels(route).inc()
