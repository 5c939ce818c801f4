"""The one owner of background job tasks: start, resume, shut down, drain.

Every running generation is an asyncio task, and so is every refund that has begun (it must end
even while the bot stops, so the member hears what happened to their units). Both live here, so
there is one place to count them, one to cancel them and one to wait for them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from bot.alerts import AlertKind, OperatorAlerts
from bot.domain import Job
from bot.jobs import FailureKind, JobReporter, JobService, LineShown
from bot.kie.credits import Balance, CreditWatch
from bot.leases import Leases

log = logging.getLogger(__name__)

SHUTDOWN_NOTICE_SECONDS = 5.0


class JobReply(JobReporter, Protocol):
    """A job's reporter that can also tell its member the bot is restarting."""

    async def show_paused(self) -> None: ...

    async def stop(self) -> None:
        """Show nothing more: the job ended elsewhere (cancelled)."""
        ...


class JobRunner:
    """Runs jobs in the background and owns their tasks, from start to shutdown.

    `Generation` starts each admitted job here; the bot resumes the jobs a previous run left
    open at start-up (`resume`) and calls `shutdown` from `close()`. `JobService.run` hands the
    refund it begins to `keep_finishing`, so `drain` can wait for it. One per process, built
    by the composition root; the reply for each job comes from `reply_for`, which the Discord
    side provides.
    """

    def __init__(
        self,
        jobs: JobService,
        credits: CreditWatch,
        alerts: OperatorAlerts,
        *,
        reply_for: Callable[[Job], JobReply],
        low_credits_text: Callable[[Balance], str],
        notice_seconds: float = SHUTDOWN_NOTICE_SECONDS,
        leases: Leases | None = None,
    ) -> None:
        self._jobs = jobs
        self._credits = credits
        self._alerts = alerts
        self._reply_for = reply_for
        self._low_credits_text = low_credits_text
        self._notice_seconds = notice_seconds
        self._running: dict[asyncio.Task[None], tuple[int, JobReply]] = {}  # -> job id, reply
        # Jobs waiting in the fair-use line, which holds them (no task): job id -> reply.
        self._waiting: dict[int, JobReply] = {}
        self._on_admitted = self._admitted  # one bound method for every waiting job
        self._finishing: set[asyncio.Task[None]] = set()
        self.accepting = True  # False from the start of shutdown: no new job is admitted
        # Which jobs this process runs, in the database (None on SQLite: one process, no lease).
        self._leases = leases
        self._keeper: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        """Jobs this process has started and not ended: running, or waiting in line."""
        return len(self._running) + len(self._waiting)

    async def resume(self) -> None:
        """Pick up every job a previous run left open (a restart, a crash, a deploy); with
        other processes on the database, only those whose lease ran out. Then keep this
        process's leases renewed, and take over the jobs of processes that die."""
        await self._jobs.recall_run_times()
        leases = self._leases
        if leases is not None:
            await self._jobs.assume_recent_submissions()
            await self._take_over(leases, starting=True)
        else:  # the only process: every open job is ours
            unfinished = await self._jobs.unfinished()
            for job in unfinished:
                self.start(job)
            if unfinished:
                log.info("resumed %d unfinished jobs", len(unfinished))
        if leases is not None and self._keeper is None:
            self._keeper = asyncio.create_task(
                self._keep_leases(leases), name=f"job-leases:{leases.owner}"
            )

    async def _take_over(self, leases: Leases, *, starting: bool = False) -> None:
        """Run the jobs whose process stopped renewing their leases (killed, or cut off)."""
        taken = await leases.take_expired(starting=starting)
        mine = {job_id for job_id, _reply in self._running.values()} | self._waiting.keys()
        # Our own lease can run out only if this process stalled longer than the lease: the
        # task still running it carries on.
        jobs = await self._jobs.adopt([job_id for job_id in taken if job_id not in mine])
        if jobs and self._jobs.accounts is not None:
            # Keys set (or removed) through another process since this one started.
            await self._jobs.accounts.refresh()
        for job in jobs:
            self.start(job)
        if jobs:
            log.info("took over %d jobs whose process stopped renewing their leases", len(jobs))

    async def _keep_leases(self, leases: Leases) -> None:
        while True:
            await asyncio.sleep(leases.every)
            try:
                await leases.renew()
                if self.accepting:
                    await self._take_over(leases)
            except Exception:
                # The database is unreachable for a moment: the next round tries again (the
                # leases last three rounds).
                log.warning("could not renew job leases", exc_info=True)

    def stop_accepting(self) -> None:
        """The first step of a shutdown: no new request is admitted from now on."""
        self.accepting = False

    def start(self, job: Job) -> None:
        """Run a job in the background, keeping a reference so it is not garbage collected.

        Once the bot is stopping, a job charged in the last moment is not started: it is open in
        the database, its reply says it is waiting, and the next start resumes it."""
        if not self.accepting:
            return
        reply = self._reply_for(job)
        self._spawn(job.id, reply, self._line_up(job, reply))

    def _spawn(self, job_id: int, reply: JobReply, work: Coroutine[Any, Any, None]) -> None:
        # A context of its own: the job does not carry the command's (its turn at admission,
        # its locale), which would keep them alive as long as the job.
        task = asyncio.create_task(work, name=f"job-{job_id}", context=contextvars.Context())
        self._running[task] = (job_id, reply)
        task.add_done_callback(self._forget)

    async def cancel(self, job_id: int, by_user: int) -> bool:
        """Cancel a job kie.ai has not seen yet: refunded, out of the line, its task stopped
        and its reply silenced. False when it was already submitted, finished or cancelled
        (the ledger decides, atomically, against a racing submission or a second press)."""
        if not await self._jobs.cancel(job_id, by_user):
            return False
        waiting = self._waiting.pop(job_id, None)  # out of the line already (`JobService`)
        if waiting is not None:
            await waiting.stop()
        for task, (running_id, reply) in list(self._running.items()):
            if running_id == job_id:
                # Safe: the job can no longer reach kie.ai (it is not "reserved" any more), so
                # the task is waiting in line, for its turn or on a pause, or is about to learn
                # that its claim failed.
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await reply.stop()
        return True

    def keep_finishing(self, task: asyncio.Task[None]) -> None:
        """Hold a refund in progress until it ends (`drain` waits for these)."""
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _line_up(self, job: Job, reply: JobReply) -> None:
        """Claim the job (several processes), then its turn in the fair-use line: a job that
        must wait ends this task and waits as an entry in the line (`_waiting`), its task
        started again once it may run."""
        leases = self._leases
        if leases is not None and not await leases.claim(job.id):
            log.info("job %s is leased by another process; leaving it to that one", job.id)
            return
        shown = LineShown()
        if await self._jobs.line_up(job, reply, shown, self._on_admitted):
            # Admission comes later, from the loop: the reply is found here by then.
            self._waiting[job.id] = reply
            return
        await self._run(job, reply, shown)

    def _admitted(self, job: Job, shown: LineShown) -> None:
        reply = self._waiting.pop(job.id, None)
        if reply is None:
            return  # cancelled meanwhile
        if not self.accepting:  # stopping: it stays open in the database for the next start
            self._jobs.run_queue.leave(job.id)
            return
        self._spawn(job.id, reply, self._run(job, reply, shown))

    async def _run(self, job: Job, reply: JobReply, shown: LineShown) -> None:
        leases = self._leases
        failure = await self._jobs.run(job, reply, keep=self.keep_finishing, shown=shown)
        if leases is not None:
            try:
                await leases.release(job.id)
            except Exception:
                # It ended: an open lease on a finished job holds nothing back.
                log.warning("job %s: could not release its lease", job.id, exc_info=True)
        # Each finished job is a chance to notice a low balance before members run into it.
        # Best effort: the job's outcome is settled and told already.
        try:
            if await self._jobs.own_key_balance(job, failure):
                return  # a server's own key: its balance is that server's to hear about
            low = await self._credits.after_job(
                out_of_credits=failure is FailureKind.OUT_OF_CREDITS
            )
            if low is not None:
                await self._alerts.alert(AlertKind.LOW_BALANCE, self._low_credits_text(low))
        except Exception:
            log.warning("job %s: the balance check after it failed", job.id, exc_info=True)
        finally:
            try:
                await self._jobs.account_done(job)
            except Exception:
                log.warning("job %s: could not sweep retired kie.ai keys", job.id, exc_info=True)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)

    async def shutdown(self) -> None:
        """Stop taking work; unfinished jobs stay open in the database and resume on next start.

        Members whose jobs had started are told the bot is restarting, and refunds in progress
        get to tell theirs, each within a few seconds (Docker gives a stopping container about
        ten). Jobs still waiting in the line are not edited: their reply already says they are
        waiting, their units stay charged, and they take their place again on the next start.
        With thousands waiting, one edit each would take longer than Docker waits.
        """
        self.stop_accepting()
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()  # waited for below: no pause here before the line closes
        line = self._jobs.run_queue
        line.close()  # nobody else is let in while the running jobs are cancelled
        waiting = line.waiting_jobs() | self._waiting.keys()
        self._waiting.clear()  # they wait in the database now, for the next start
        # createTask calls on the wire end first: cut off, they would be refunded at the next
        # start (kie.ai may have the task), not resumed.
        await self._jobs.finish_submissions(within=self._notice_seconds)
        running = dict(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        if running or waiting:
            log.info(
                "left %d unfinished jobs to the next start (%d of them waiting in line)",
                len({job_id for job_id, _reply in running.values()} | waiting),
                len(waiting),
            )
            notices = [
                reply.show_paused() for job_id, reply in running.values() if job_id not in waiting
            ]
            try:
                async with asyncio.timeout(self._notice_seconds):
                    await asyncio.gather(*notices, return_exceptions=True)
            except TimeoutError:
                log.warning("not every member with a started job could be told about the restart")
        try:
            async with asyncio.timeout(self._notice_seconds):
                await self.drain()
        except TimeoutError:
            log.warning("not every refunded member could be told before shutting down")
        if keeper is not None:
            await asyncio.gather(keeper, return_exceptions=True)
        # The running slots the cancelled jobs held across the processes go back first.
        await line.settle(within=self._notice_seconds)
        if self._leases is not None:
            try:
                # Another process (or the next start) takes this one's open jobs at once.
                await self._leases.release_mine()
            except Exception:
                log.warning("could not release job leases; they expire by themselves")
        await self._jobs.stop_polling()
        await self._jobs.kie_breaker.stop()

    async def drain(self) -> None:
        """Let refunds in progress tell their members (bound it with a timeout)."""
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
