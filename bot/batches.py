"""Requests for several images: each image is its own job (its own kie.ai task, charge and
refund); the batch is delivered once, as one message, when every job of it has finished.

`JobService` hands each batch job's outcome here: a downloaded image (`finished`), a refund
(`failed`) or a cancellation (`cancelled`). The arrival that completes the batch sends it through
the batch's reporter (`JobReporter.deliver_batch`), then every delivered job of it is marked
delivered. After a restart the batch is rebuilt from the ledger: siblings refunded before the
crash count as failed, and a sibling already marked delivered means the message went out, so
nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.domain import Job, JobState

if TYPE_CHECKING:
    from bot.jobs import Delivery, Failure, Finished, JobReporter
    from bot.store import JobLedger

log = logging.getLogger(__name__)

# Sends a delivery, again while Discord is down (`JobService._patiently`); the str names it.
Redeliver = Callable[[Callable[[], Awaitable["Delivery"]], str], Awaitable["Delivery"]]


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch message shows: the images, and how many could not be made."""

    jobs: tuple[Job, ...]  # every job of the batch, in order (the first one's nonce is used)
    finished: tuple[Finished, ...]  # the images, in batch order
    failures: tuple[Failure, ...]  # those refunded in this run with a reason, in batch order
    failed: int  # jobs refunded (failed or cancelled), whatever run refunded them
    refunded_units: int


@dataclass(eq=False)
class _Batch:
    jobs: tuple[Job, ...]
    finished: dict[int, Finished] = field(default_factory=dict)  # batch index ->
    failed: dict[int, Failure | None] = field(default_factory=dict)  # None: no reason here
    delivered: asyncio.Future[Delivery | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    reporter: JobReporter | None = None
    sending: bool = False

    @property
    def complete(self) -> bool:
        return len(self.finished) + len(self.failed) >= len(self.jobs)


class Batches:
    """The batches being delivered in this process. One per `JobService`."""

    def __init__(self, ledger: JobLedger, redeliver: Redeliver) -> None:
        self._ledger = ledger
        self._redeliver = redeliver
        self._batches: dict[int, _Batch] = {}
        self._loading: dict[int, asyncio.Lock] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._done: set[int] = set()  # batches sent (or given up) in this run

    async def finished(self, finished: Finished, reporter: JobReporter) -> Delivery | None:
        """Add a downloaded image; return once the whole batch is delivered (None: it could
        not be, or was already delivered before a restart)."""
        job = finished.job
        batch = await self._batch(job, reporter)
        if not batch.delivered.done():
            batch.finished[job.batch_index] = finished
            await self._send_if_complete(batch)
        # Shielded: a job cancelled at shutdown must not cancel its siblings' wait.
        return await asyncio.shield(batch.delivered)

    async def failed(self, job: Job, failure: Failure | None, reporter: JobReporter) -> None:
        """A job of the batch was refunded (its units are back already)."""
        if job.batch_id in self._done:
            log.warning("job %s refunded after its batch was sent", job.id)
            return
        batch = await self._batch(job, reporter)
        batch.finished.pop(job.batch_index, None)
        batch.failed[job.batch_index] = failure
        await self._send_if_complete(batch)

    def cancelled(self, job: Job) -> None:
        """A waiting job of the batch was cancelled: it will not arrive. If the others are all
        in, the batch goes out now (in the background: the press must be answered first)."""
        batch = self._batches.get(job.batch_id or 0)
        if batch is None:
            return  # nobody has arrived yet: whoever does reads the refund from the ledger
        batch.failed[job.batch_index] = None
        task = asyncio.create_task(self._send_if_complete(batch), name=f"batch-{job.batch_id}")
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _batch(self, job: Job, reporter: JobReporter) -> _Batch:
        assert job.batch_id is not None
        lock = self._loading.setdefault(job.batch_id, asyncio.Lock())
        async with lock:
            batch = self._batches.get(job.batch_id)
            if batch is None:
                jobs = tuple(await self._ledger.batch_jobs(job.batch_id))
                batch = self._batches[job.batch_id] = _Batch(jobs)
                for sibling in jobs:
                    if sibling.state is JobState.REFUNDED:
                        batch.failed[sibling.batch_index] = None
                    elif sibling.state is JobState.DELIVERED:
                        # Marked only after the message went out: it must not go out again.
                        batch.delivered.set_result(None)
                        break
            if batch.reporter is None:
                batch.reporter = reporter
        return batch

    async def _send_if_complete(self, batch: _Batch) -> None:
        if not batch.complete or batch.sending or batch.delivered.done():
            return
        batch.sending = True
        assert batch.reporter is not None
        first = batch.jobs[0]
        try:
            finished = tuple(batch.finished[i] for i in sorted(batch.finished))
            outcome = BatchOutcome(
                jobs=batch.jobs,
                finished=finished,
                failures=tuple(f for _, f in sorted(batch.failed.items()) if f is not None),
                failed=len(batch.failed),
                refunded_units=sum(batch.jobs[i].units for i in batch.failed),
            )
            reporter = batch.reporter
            delivery = await self._redeliver(
                lambda: reporter.deliver_batch(outcome), f"batch {first.batch_id}"
            )
            if finished:
                await self._ledger.mark_batch_delivered(
                    [f.job.id for f in finished], delivery.via, delivery.url
                )
            log.info(
                "batch %s delivered: %d images, %d refunded",
                first.batch_id,
                len(finished),
                len(batch.failed),
            )
            batch.delivered.set_result(delivery)
        except Exception as error:
            log.warning("batch %s could not be delivered: %s", first.batch_id, error)
            if not batch.delivered.done():
                batch.delivered.set_exception(error)
            batch.delivered.exception()  # retrieved: the waiting jobs read it
        except BaseException:
            batch.delivered.cancel()  # shutting down: the jobs stay open and resume
            raise
        finally:
            self._done.add(first.batch_id or 0)
            self._batches.pop(first.batch_id or 0, None)
            self._loading.pop(first.batch_id or 0, None)
