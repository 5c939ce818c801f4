"""The life of one generation: reserve, submit, wait, download, deliver, and refund on failure.

It knows nothing of Discord: it reports to a `JobReporter`, which the cog implements on top of an
interaction. Every path out of `JobService.run` either delivers (and commits the charge) or
refunds and reports a `Failure`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.accounts import Account, KieAccounts
from bot.batches import Batches, BatchOutcome
from bot.domain import (
    OPEN_STATES,
    DeliveryRoute,
    Hold,
    Job,
    JobState,
    NewJob,
    Origin,
    OverLimit,
    ReplyTarget,
)
from bot.kie import (
    CircuitBreaker,
    DownloadedImage,
    DownloadError,
    ImageRequest,
    KieAuthError,
    KieClient,
    KieConnectionError,
    KieError,
    KieFeatureDisabled,
    KieGenerationRejected,
    KieInsufficientCredits,
    KieMaintenance,
    KieMalformedResponse,
    KieRateLimited,
    KieServerError,
    KieSubmitUncertain,
    KieTimeout,
    KieValidationError,
    TaskInfo,
    blocked_by_safety_filter,
)
from bot.kie.credits import Balance
from bot.kie.polling import PollScheduler
from bot.metrics import Metrics
from bot.operator import PauseGate
from bot.outcomes import JobOutcomes, Timeline, job_context
from bot.quota import QuotaBook, QuotaStatus
from bot.redelivery import DiscordUnavailable, RedeliveryPolicy, patiently
from bot.runqueue import RunLimits, RunQueue, Wait
from bot.store import JobLedger

log = logging.getLogger(__name__)


# After a restart, how long a job past its deadline waits for its first status answer.
FIRST_LOOK_SECONDS = 120.0
# How often a job whose createTask's answer was lost looks whether a callback named its task.
ADOPT_CHECK_SECONDS = 1.0
# How long a job whose createTask was cut off (a crash, a kill) waits for kie.ai's callback
# before concluding that kie.ai never got it and sending it again: three times the longest
# recent task, and never less than this (or more than the job's own timeout).
LOST_SEND_MIN_PATIENCE = 60.0
LOST_SEND_TASK_MULTIPLE = 3.0
# A result that arrives just before the deadline still gets this long to download.
MIN_DOWNLOAD = 15.0


class Phase(enum.StrEnum):
    # Few states are shown, so a job costs few progress edits (at most LINE_EDITS for its place
    # in line, then "generating"): Discord's interaction webhooks have small rate-limit buckets;
    # live timestamps are the clocks.
    WAITING = "waiting"  # held back by the member's or the server's running-jobs limit
    QUEUED = "queued"  # in line for kie.ai's submission limit (20 per 10 s per account)
    GENERATING = "generating"  # kie.ai has the task (its own waiting/queuing included)
    PAUSED = "paused"  # the operator paused generation; it goes on when they resume
    KIE_DOWN = "kie_down"  # kie.ai's circuit breaker is open; it goes on when kie.ai is back


# Progress edits one job may spend on its place in line (waiting and queued for kie.ai together).
# With the first answer, "generating" and the result, a job costs at most 5 Discord calls, 6 when
# the result has to be posted in the channel instead. The ETA is a live timestamp: no edits.
LINE_EDITS = 2
# At start-up, the line's run time is recalled from this many of the latest delivered jobs,
# sent within this many seconds (an older pace says little about today's).
RECALLED_RUNS = 50
RECALL_RUNS_WITHIN = 24 * 3600.0
# An ETA that moved by less than this is not news, whatever the fraction.
ETA_SLACK_SECONDS = 10.0
# A halved position is news only while the start is at least this far off (or when the job is
# next in line): nearer, the live countdown already tells the member what they want to know,
# and the edit would cost a call.
POSITION_NEWS_MIN_WAIT = 60.0
# After a restart: how much later than its recorded `submitted_at` a previous run's createTask
# may have reached kie.ai (a loaded event loop sends it late); see `JobService.unfinished`.
SUBMIT_ARRIVAL_SLACK = 5.0


@dataclass
class LineShown:
    """What one job has shown of its place in line, to decide when another edit is worth it:
    when the position has halved (to the front of the line, or while the start is still a
    minute off or more) or the expected start moved by more than a third."""

    edits: int = 0
    position: int = 0
    eta: float = 0.0  # Unix time the turn was expected
    at: float = 0.0  # when it was shown

    def worth_showing(self, position: int, eta: float, now: float) -> bool:
        if self.edits == 0:
            return True
        if self.edits >= LINE_EDITS:
            return False
        if position <= self.position // 2 and (
            position == 1 or eta - now >= POSITION_NEWS_MIN_WAIT
        ):
            return True
        drift = abs(eta - self.eta)
        return drift > ETA_SLACK_SECONDS and drift > max(self.eta - self.at, 0.0) / 3

    def note(self, position: int, eta: float, now: float) -> None:
        self.edits += 1
        self.position, self.eta, self.at = position, eta, now


class FailureKind(enum.StrEnum):
    PROMPT_REJECTED = "prompt_rejected"
    BUSY = "busy"
    MAINTENANCE = "maintenance"
    GENERATION_FAILED = "generation_failed"
    FEATURE_DISABLED = "feature_disabled"
    OUT_OF_CREDITS = "out_of_credits"
    MISCONFIGURED = "misconfigured"
    TIMED_OUT = "timed_out"
    UNREACHABLE = "unreachable"
    SUBMIT_UNCERTAIN = "submit_uncertain"
    INTERRUPTED = "interrupted"
    BAD_RESPONSE = "bad_response"
    DOWNLOAD_FAILED = "download_failed"
    DELIVERY_FAILED = "delivery_failed"
    REFERENCE_FAILED = "reference_failed"  # kie.ai could not take the reference image
    CONTENT_FILTERED = "content_filtered"  # kie.ai's safety filter blocked the image
    CANCELLED = "cancelled"  # the member cancelled it before it reached kie.ai
    INTERNAL = "internal"


# Failures only the bot's operator can fix (the kie.ai account): logged loudly and alerted,
# since members can do nothing about them.
OPERATOR_PROBLEMS = frozenset(
    {FailureKind.OUT_OF_CREDITS, FailureKind.MISCONFIGURED, FailureKind.FEATURE_DISABLED}
)
# Tells the operator about one of those; True when the alert reached them (now or lately).
# Of those, the ones a server's own key causes: its managers fix them (`bot.accounts`).
KEY_PROBLEMS = frozenset({FailureKind.OUT_OF_CREDITS, FailureKind.MISCONFIGURED})
AlertOperator = Callable[[FailureKind], Awaitable[bool]]
# Tells a server's managers their own kie.ai key failed (refused, out of credits): True if told.
AlertServer = Callable[[int, FailureKind], Awaitable[bool]]
# Tells a server's managers their own kie.ai account is running low (its balance).
AlertServerLow = Callable[[int, Balance], Awaitable[None]]
# Takes ownership of a refund in progress, so shutdown can wait for it (`JobRunner`).
KeepTask = Callable[[asyncio.Task[None]], None]


@dataclass(frozen=True)
class JobRequest:
    user_id: int
    guild_id: int | None
    channel_id: int | None
    image: ImageRequest  # references as given; a re-roll's may already be on kie.ai's host
    reply: ReplyTarget | None = None
    role_ids: tuple[int, ...] = ()  # the member's roles, for role quotas
    origin: Origin = Origin.COMMAND
    parent_job_id: int | None = None
    age_restricted: bool = False  # asked in an age-restricted channel (or a thread of one)
    count: int = 1  # images asked for (1-4): one job each, charged all or none
    private: bool = False  # the result is for the member's eyes only (their /settings)
    locale: str | None = None  # the member's Discord locale, kept with the job for its replies


@dataclass(frozen=True)
class Progress:
    phase: Phase
    started_at: float  # Unix time the job was reserved, for a live relative timestamp
    position: int | None = None  # jobs ahead before this one reaches kie.ai, plus one
    turn_at: float | None = None  # Unix time it is expected to reach kie.ai
    wait: Wait | None = None  # place in the server's line and what holds it, while waiting
    note: str | None = None  # the operator's reason, while paused


@dataclass(frozen=True)
class Finished:
    job: Job
    image: DownloadedImage
    elapsed: float
    quota: QuotaStatus
    shown_again: bool = False  # an earlier result posted again from /history, not a new one


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    quota: QuotaStatus
    detail: str | None = None  # kie.ai's own reason, when it gave one the user can act on
    operator_alerted: bool = False  # for the operator's problems: they really were told


@dataclass(frozen=True)
class Delivery:
    via: DeliveryRoute
    url: str | None  # a link to the message that shows the image


class DeliveryError(Exception):
    """The reporter could not put the image in front of the user."""


class JobReporter(Protocol):
    def progress(self, progress: Progress) -> None:
        """Note the newest progress; it is shown when its edit's turn comes (never waits)."""

    async def deliver(self, finished: Finished) -> Delivery:
        """Show the image; say where it went."""
        ...

    async def fail(self, failure: Failure) -> None: ...

    async def deliver_batch(self, outcome: BatchOutcome) -> Delivery:
        """Show a batch's images in one message (or its failure, when none was made)."""
        ...


class JobTaken(Exception):
    """A state change found the job no longer where this run left it: someone else (another
    process on the same database) moved it, so this run stops without touching it again."""


class _KieDown(Exception):
    """kie.ai's circuit breaker opened before this job's createTask went out."""


class _KeyChanged(Exception):
    """The server's kie.ai key changed while this job waited for its turn: it is sent with
    the new one (nothing went out yet)."""


class JobFailed(Exception):
    def __init__(self, kind: FailureKind, detail: str | None = None) -> None:
        super().__init__(kind.value if detail is None else f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail


_KIND_BY_ERROR: tuple[tuple[type[KieError], FailureKind], ...] = (
    (KieValidationError, FailureKind.PROMPT_REJECTED),
    (KieRateLimited, FailureKind.BUSY),
    (KieMaintenance, FailureKind.MAINTENANCE),
    (KieGenerationRejected, FailureKind.GENERATION_FAILED),
    (KieFeatureDisabled, FailureKind.FEATURE_DISABLED),
    (KieInsufficientCredits, FailureKind.OUT_OF_CREDITS),
    (KieAuthError, FailureKind.MISCONFIGURED),
    (KieSubmitUncertain, FailureKind.SUBMIT_UNCERTAIN),
    (KieTimeout, FailureKind.TIMED_OUT),
    (KieConnectionError, FailureKind.UNREACHABLE),
    (KieServerError, FailureKind.UNREACHABLE),
    (KieMalformedResponse, FailureKind.BAD_RESPONSE),
    (DownloadError, FailureKind.DOWNLOAD_FAILED),
)


def failure_kind(error: KieError) -> FailureKind:
    for error_type, kind in _KIND_BY_ERROR:
        if isinstance(error, error_type):
            return kind
    return FailureKind.INTERNAL


@dataclass(frozen=True)
class JobLimits:
    job_timeout: float = 600.0
    max_image_bytes: int = 50 * 1024 * 1024
    download_timeout: float = 60.0
    min_download: float = MIN_DOWNLOAD  # what any result gets, even past the job's deadline
    max_concurrent_transfers: int = 8
    max_running_per_member: int | None = 2  # defaults where a server set none; None: no limit
    max_running_per_server: int | None = 20
    # While Discord is down on delivery.
    redelivery: RedeliveryPolicy = dataclasses.field(default_factory=RedeliveryPolicy)


class JobService:
    """Every step of a generation, from the charge to the delivered image or the refund.

    One per process, for the bot's lifetime. `Generation` calls `reserve` (the charge) and
    `JobRunner` runs `run` for each job in its own task, with a `JobReporter` (the Discord
    side's `DiscordReply`) to show progress and deliver. It owns the fair-use line
    (`RunQueue`), the pause gate, the bounded transfers, and the rule that every path out of
    `run` either delivers or refunds exactly once; the ledger's state transitions make a second
    process or a resumed job find the work already taken.
    """

    def __init__(
        self,
        ledger: JobLedger,
        quota: QuotaBook,
        kie: KieClient,
        limits: JobLimits,
        polls: PollScheduler,
        *,
        callback_base_url: str | None = None,
        gate: PauseGate | None = None,
        alert_operator: AlertOperator | None = None,
        allow_nsfw: bool = False,
        metrics: Metrics | None = None,
        accounts: KieAccounts | None = None,
        alert_server: AlertServer | None = None,
        alert_server_low: AlertServerLow | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._outcomes = JobOutcomes(metrics)  # one log line and the metrics per job's end
        self._quota = quota
        self._kie = kie
        self._limits = limits
        self.polls = polls
        # Servers with their own kie.ai key run on their own client (`bot.accounts`).
        self.accounts = accounts
        self._alert_server = alert_server
        self._alert_server_low = alert_server_low
        # The account each job running here was sent with (`Job.kie_account`): every later
        # step uses it, whatever its server's key has become since.
        self._pins: dict[int, Account] = {}
        self._callback_base = callback_base_url.rstrip("/") if callback_base_url else None
        self._clock = clock
        self._gate = gate or PauseGate()
        self._alert_operator = alert_operator
        # Requests for several images, delivered together (again while Discord is down).
        self.batches = Batches(ledger, self._patiently)
        self._allow_nsfw = allow_nsfw  # ALLOW_NSFW: may servers ever turn kie.ai's filter off
        # Bounds memory: at most this many images are downloaded or uploaded at once.
        self._transfers = asyncio.Semaphore(limits.max_concurrent_transfers)
        self.run_queue = RunQueue()
        # createTask calls claimed (`submitting`) and not yet recorded: a stop waits for them,
        # since one cut off would leave a paid task the next start must refund, not resend.
        self._sending: set[int] = set()
        self._all_sent = asyncio.Event()
        self._all_sent.set()
        self._stopping = False

    def _account(self, job: Job) -> Account:
        """The kie.ai account (client, rate budget, poll scheduler) of this job: the one it was
        sent with, else (not sent yet) the one its server uses now."""
        pinned = self._pins.get(job.id)
        if pinned is not None:
            return pinned
        if self.accounts is None:
            return Account(self._kie, self.polls)
        return self.accounts.for_guild(job.guild_id)

    def _pin_recorded(self, job: Job) -> None:
        """A job already sent (resumed after a restart, taken over) goes on with the account
        its row names. One whose account is not known at all (its key's row deleted by hand)
        is refunded rather than asked about with another account, which would not know it."""
        if job.state is JobState.RESERVED or job.kie_account is None or self.accounts is None:
            return  # not sent yet, or sent before accounts were recorded: its server's
        account = self.accounts.pinned(job.kie_account)
        if account is None:
            log.error(
                "job %s: the kie.ai account it was sent with (%s) is not stored any more;"
                " refunding it",
                job.id,
                job.kie_account,
            )
            raise JobFailed(FailureKind.INTERNAL)
        self._pins[job.id] = account

    async def account_done(self, job: Job) -> None:
        """The job ended here: forget its account, and a retired key it was the last open
        job of (`KieAccounts.sweep`)."""
        account = self._pins.pop(job.id, None)
        if account is not None and account.own and self.accounts is not None:
            await self.accounts.sweep()

    async def own_key_balance(self, job: Job, failure: FailureKind | None) -> bool:
        """After a job on a server's own key: its balance check, and a low-balance alert to that
        server's managers, not the operator. False: the job used the operator's key."""
        account = self._account(job)
        if not account.own or account.credits is None:
            return False
        low = await account.credits.after_job(out_of_credits=failure is FailureKind.OUT_OF_CREDITS)
        if low is not None and self._alert_server_low is not None and job.guild_id is not None:
            await self._alert_server_low(job.guild_id, low)
        return True

    def wake(self, job_id: int) -> bool:
        """kie.ai called back about this job: its task is asked about next. False when this
        process is not waiting for it (in a cluster, another may be: `bot.relay`)."""
        return (self.accounts or self.polls).wake(job_id)

    async def stop_polling(self) -> None:
        await self.polls.stop()
        if self.accounts is not None:
            await self.accounts.stop()

    @property
    def kie_breaker(self) -> CircuitBreaker:
        """kie.ai's circuit breaker: `/readyz` and the metrics read its `status`."""
        return self._kie.breaker

    async def finish_submissions(self, within: float) -> None:
        """The bot is stopping: no createTask starts from now on (those jobs stay reserved and
        are sent by the next start), and those already on the wire are waited for, at most
        `within` seconds, so their task ids are recorded rather than lost."""
        self._stopping = True
        try:
            async with asyncio.timeout(within):
                await self._all_sent.wait()
        except TimeoutError:
            still = len(self._sending)
            log.warning("%d createTask calls were still on the wire at shutdown", still)

    def hold(self, request: JobRequest) -> Hold:
        """Count the units `request` will cost in every check from now, until its charge is
        asked for (`reserve` with this hold) or the hold is released (`release`)."""
        units = self._quota.costs.of(request.image) * request.count
        return self._ledger.hold(request.user_id, request.guild_id, self._quota.today(), units)

    def release(self, hold: Hold) -> None:
        self._ledger.release(hold)

    async def reserve(self, request: JobRequest, hold: Hold | None = None) -> list[Job] | OverLimit:
        """Charge the units for `request` (each of its images, all or none) and return its
        jobs, or say which limit (member quota, server budget) it would exceed."""
        image = request.image
        policy = await self._quota.policy(request.guild_id)
        # kie.ai's filter is off only where the operator, the server and the channel all allow
        # adult content; spoilers are the server's wish for its age-restricted channels.
        unfiltered = self._allow_nsfw and policy.nsfw_allowed and request.age_restricted
        charged = await self._ledger.reserve_batch(
            NewJob(
                user_id=request.user_id,
                guild_id=request.guild_id,
                channel_id=request.channel_id,
                day=self._quota.today(),
                units=self._quota.costs.of(image),
                image=dataclasses.replace(image, nsfw_checker=not unfiltered),
                reply=request.reply,
                origin=request.origin,
                parent_job_id=request.parent_job_id,
                spoiler=request.age_restricted and policy.nsfw_spoiler,
                count=request.count,
                private=request.private,
                locale=request.locale,
            ),
            await self._quota.spend_limits(request.guild_id, request.role_ids, policy),
            hold,
        )
        if not isinstance(charged, OverLimit):
            self._outcomes.charged(sum(job.units for job in charged))
        return charged

    async def run_limits(self, guild_id: int | None) -> RunLimits:
        policy = await self._quota.policy(guild_id)
        per_member = policy.max_running_per_member or self._limits.max_running_per_member
        per_server = policy.max_running or self._limits.max_running_per_server
        return RunLimits(per_member=per_member or None, per_server=per_server or None)

    async def limits_changed(self, guild_id: int) -> None:
        """Apply a server's new running limits to the jobs already waiting there."""
        self.run_queue.set_limits(guild_id, await self.run_limits(guild_id))

    async def recall_run_times(self) -> None:
        """At start-up: the line's expected starts begin from the last day's jobs (the median
        time from createTask to delivery of the latest RECALLED_RUNS), not from a guess."""
        since = self._clock() - RECALL_RUNS_WITHIN
        took = await self._ledger.recent_run_seconds(since, RECALLED_RUNS)
        if took:
            self.run_queue.recall(statistics.median(took))

    async def unfinished(self) -> list[Job]:
        """Jobs a previous run left open. Call once at start-up, before any new work."""
        unfinished = await self._ledger.open_jobs()
        for job in unfinished:
            if job.state is not JobState.RESERVED:
                # Already at kie.ai: counted as running before any waiting job may start.
                self.run_queue.occupy(job.id, job.user_id, job.guild_id)
        await self.assume_recent_submissions(force=bool(unfinished))
        return unfinished

    async def assume_recent_submissions(self, *, force: bool = False) -> None:
        """At start-up: the createTask calls recorded in the last window (by a previous run,
        or another process) still count at kie.ai."""
        now = self._clock()
        # `submitted_at` is committed just before createTask is sent; kie.ai counts the call
        # when it arrives, which a busy or stalled process makes later. Each is taken as having
        # arrived up to SUBMIT_ARRIVAL_SLACK later (never after now: the process is gone).
        since = now - self._kie.submit_window - SUBMIT_ARRIVAL_SLACK
        recent = [
            min(now, at + SUBMIT_ARRIVAL_SLACK)
            for at in await self._ledger.submissions_since(since)
        ]
        if recent or force:
            # The previous run was busy moments ago; its calls still count at kie.ai.
            self._kie.assume_recent_use([now - at for at in recent])

    async def adopt(self, job_ids: Sequence[int]) -> list[Job]:
        """Jobs taken over from a process that died, read afresh: those still open, and those
        already at kie.ai counted as running, as `unfinished` does at start-up."""
        adopted: list[Job] = []
        for job_id in job_ids:
            job = await self._ledger.get_job(job_id)
            if job is None or job.state not in OPEN_STATES:
                continue
            if job.state is not JobState.RESERVED:
                self.run_queue.occupy(job.id, job.user_id, job.guild_id)
            adopted.append(job)
        return adopted

    async def run(
        self, job: Job, reporter: JobReporter, *, keep: KeepTask, shown: LineShown | None = None
    ) -> FailureKind | None:
        """Take a job from whatever state it is in to a delivered image, or to a refund.

        Used for new jobs and, after a restart, for every unfinished one: each state says what
        is already done, so nothing is submitted, delivered or charged twice. A job kie.ai has
        not seen must have had its turn in the fair-use line first (`line_up`); `shown` is what
        it showed there. Returns why the job failed, or None when it was delivered. A refund,
        once begun, runs as its own task, handed to `keep` (the `JobRunner`), which waits for
        it on shutdown.
        """
        error: Exception | None = None
        shown = shown or LineShown()
        timeline = Timeline(job.created_at, job.submitted_at)
        try:
            self._pin_recorded(job)
            if job.state is JobState.RESERVED:
                await self._while_paused(job, reporter)
            else:
                # Already at kie.ai (resumed after a restart): it runs, and counts as running.
                self.run_queue.occupy(job.id, job.user_id, job.guild_id)
            job, task_id = await self._ensure_submitted(job, reporter, shown)
            if timeline.submitted_at is None:  # sent by this run (not resumed at kie.ai)
                self._outcomes.submitted(timeline, self._clock())
            info = await self._wait(job, task_id)
            self._outcomes.finished(timeline, self._clock())
            async with self._transfers:
                image, result_url = await self._download(job, info)
                if not job.in_batch:
                    await self._deliver(job, task_id, image, reporter, result_url, timeline)
            if job.in_batch:
                # Outside the transfer slots and the line: it may wait for its siblings.
                await self._deliver_in_batch(job, image, reporter, result_url, timeline)
            return None
        except JobTaken:
            log.error("job %s changed state under this run; leaving it alone", job.id)
            return None
        except JobFailed as failed:
            kind, detail = failed.kind, failed.detail
        except KieError as kie_error:
            kind, detail, error = failure_kind(kie_error), None, kie_error
            if isinstance(kie_error, KieValidationError):
                # kie.ai says which field it refused (the prompt, or the reference image).
                detail = kie_error.reason
            if blocked_by_safety_filter(kie_error.reason):
                kind, detail = FailureKind.CONTENT_FILTERED, None
        except asyncio.CancelledError:
            raise  # shutting down: the job stays open and resumes on the next start
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            kind, detail = FailureKind.INTERNAL, None
        finally:
            self.run_queue.leave(job.id)
        # A refund that has started is finished even if the bot is stopping, so the member
        # is told what happened to their units (`JobRunner.drain` waits for these).
        finishing = asyncio.create_task(
            self._refund_and_report(job, kind, detail, reporter, error, timeline),
            name=f"refund-{job.id}",
        )
        keep(finishing)
        await asyncio.shield(finishing)
        return kind

    async def cancel(self, job_id: int, by_user: int) -> bool:
        """End a job kie.ai has not seen yet and give its units back; True only for the call
        that did. The ledger's conditional transition decides against a racing submission or
        a second press; the winner frees the job's place in the line at once."""
        if not await self._ledger.cancel(job_id, f"{FailureKind.CANCELLED.value}: by {by_user}"):
            return False
        self.run_queue.leave(job_id)
        job = await self._ledger.get_job(job_id)
        if job is None:
            return True
        self._outcomes.cancelled(job, by_user)
        if job.in_batch:
            self.batches.cancelled(job)
        return True

    async def mark_result_deleted(self, job_id: int) -> None:
        """The message that showed the job's image is gone (the Delete button)."""
        await self._ledger.mark_result_deleted(job_id)

    async def _while_paused(self, job: Job, reporter: JobReporter) -> None:
        """Hold a job that kie.ai has not seen yet while the operator has generation paused;
        its charge stays, and it goes on by itself on resume."""
        if not self._gate.paused:
            return
        progress = Progress(Phase.PAUSED, job.created_at, note=self._gate.reason)
        _report(reporter, progress)
        await self._gate.wait_open()

    async def line_up(
        self,
        job: Job,
        reporter: JobReporter,
        shown: LineShown,
        admitted: Callable[[Job, LineShown], None],
    ) -> bool:
        """Put a job kie.ai has not seen yet in the fair-use line. True when it waits there, as
        an entry with no task (`RunQueue.join`): `admitted(job, shown)` is called once it may
        run (one callable for every job: a waiting job holds no closure of its own). False
        when it may run at once (or needs no turn: it is at kie.ai already).

        Call `run` once it may run; `leave` (through `run`, or `cancel`) frees its place."""
        if job.state is not JobState.RESERVED:
            return False
        try:
            limits = await self.run_limits(job.guild_id)
        except Exception:
            # The server's own limits could not be read (the database, for a moment): the
            # deployment's apply, rather than the job failing for it.
            log.warning("job %s: its server's running limits could not be read", job.id)
            defaults = self._limits
            limits = RunLimits(
                defaults.max_running_per_member or None, defaults.max_running_per_server or None
            )
        place = _PlaceInLine(self, job, reporter, shown, admitted)
        return not self.run_queue.join(job.id, job.user_id, job.guild_id, limits, place)

    def _show_place(self, job: Job, reporter: JobReporter, shown: LineShown, wait: Wait) -> None:
        """One place and one time for both lines: the fair-use line, then kie.ai's."""
        now = self._clock()
        kie = self._account(job).kie
        turn = kie.submit_turn(job.user_id)
        position = wait.position + turn.position - 1
        kie_seconds = turn.wait_seconds + wait.position * kie.submit_spacing
        eta = now + max(wait.eta_seconds, kie_seconds)
        if not shown.worth_showing(position, eta, now):
            return
        shown.note(position, eta, now)
        _report(reporter, Progress(Phase.WAITING, job.created_at, position, eta, wait=wait))

    async def _deliver(
        self,
        job: Job,
        task_id: str,
        image: DownloadedImage,
        reporter: JobReporter,
        result_url: str,
        timeline: Timeline,
    ) -> None:
        if not await self._ledger.begin_delivery(job.id):
            raise JobTaken
        quota = await self._quota_after(job)
        finished = Finished(job, image, self._clock() - job.created_at, quota)
        try:
            delivery = await self._patiently(lambda: reporter.deliver(finished), f"job {job.id}")
        except (DeliveryError, DiscordUnavailable) as error:
            log.warning("job %s: could not deliver the image: %s", job.id, error)
            raise JobFailed(FailureKind.DELIVERY_FAILED) from None
        if not await self._ledger.mark_delivered(
            # kie.ai's own result link (not a 20-minute fresh one): /history shows it again.
            job.id,
            delivery.via,
            delivery.url,
            image_url=result_url,
        ):
            log.error("job %s was delivered but already marked finished elsewhere", job.id)
            return
        self._outcomes.delivered(job, task_id, timeline, self._clock(), via=delivery.via)

    async def _deliver_in_batch(
        self,
        job: Job,
        image: DownloadedImage,
        reporter: JobReporter,
        result_url: str,
        timeline: Timeline,
    ) -> None:
        """Hand the image to its batch, which is sent as one message once every job of it
        has finished; the batch marks its jobs delivered."""
        # kie.ai's link is kept now: the batch marks its jobs delivered together, later.
        if not await self._ledger.begin_delivery(job.id, image_url=result_url):
            raise JobTaken
        # Its place among the member's running jobs is free while it waits for the others:
        # a waiting sibling must be able to start (with a limit of 1 it would wait forever).
        self.run_queue.leave(job.id)
        finished = Finished(
            job, image, self._clock() - job.created_at, await self._quota_after(job)
        )
        try:
            delivery = await self.batches.finished(finished, reporter)
        except (DeliveryError, DiscordUnavailable) as error:
            log.warning("job %s: could not deliver its batch: %s", job.id, error)
            raise JobFailed(FailureKind.DELIVERY_FAILED) from None
        if delivery is not None:
            self._outcomes.delivered(job, job.task_id, timeline, self._clock(), via=delivery.via)

    async def _patiently(self, send: Callable[[], Awaitable[Delivery]], what: str) -> Delivery:
        """A delivery, tried again while Discord is down (`bot/redelivery.py`). The job stays
        `delivering` meanwhile: `begin_delivery` was its one claim, `mark_delivered` follows
        the one attempt that worked."""
        return await patiently(send, policy=self._limits.redelivery, what=what)

    async def _quota_after(self, job: Job) -> QuotaStatus:
        limit = job.quota_limit if job.quota_limit is not None else self._quota.daily_limit
        return await self._quota.status(job.user_id, job.guild_id, limit)

    def callback_url(self, job: Job) -> str | None:
        if self._callback_base is None:
            return None
        return f"{self._callback_base}/kie/callback/{job.id}/{job.callback_token}"

    async def _ensure_submitted(
        self, job: Job, reporter: JobReporter, shown: LineShown
    ) -> tuple[Job, str]:
        """The job (as it now stands, for what follows) and its kie.ai task."""
        if job.state is JobState.SUBMITTING:
            # createTask may have reached kie.ai before the bot stopped: its callback names the
            # task; only a long silence sends it again (`_adopted_task`), as a fresh send.
            adopted = await self._adopted_task(job)
            if adopted is not None:
                return job, adopted
            job = dataclasses.replace(job, state=JobState.RESERVED, submitted_at=None)
            return job, await self._submit(job, reporter, shown)
        if job.task_id is not None:
            return job, job.task_id
        return job, await self._submit(job, reporter, shown)

    async def _adopted_task(self, job: Job) -> str | None:
        """The task of a job whose createTask's answer was lost (a stop or crash while it was
        on the wire). With callbacks on, kie.ai calls the job's own address when its task
        ends, and the callback names the task (`WebhookServer` records it, in whichever
        process receives it). Without callbacks nothing can name it: refunded at once.

        None: no callback came within the patience (`_lost_send_patience`), so kie.ai most
        likely never got the request (the process died between recording the send and the
        request leaving); the job is back in line, to be sent again. Sending again is a bet:
        had kie.ai got the first request after all and only called back very late, that
        image is paid for and unused. The member is charged once and gets one image."""
        if self.callback_url(job) is None:
            raise JobFailed(FailureKind.INTERRUPTED)
        sent_at = job.submitted_at or self._clock()
        deadline = sent_at + self._lost_send_patience(job)
        while True:
            current = await self._ledger.get_job(job.id)
            if current is None:
                raise JobTaken
            if current.state is JobState.SUBMITTED and current.task_id is not None:
                log.info("job %s resumes with the task kie.ai's callback named", job.id)
                return current.task_id
            if current.state is not JobState.SUBMITTING:
                raise JobTaken  # settled elsewhere (cancelled, taken over)
            if self._clock() >= deadline:
                if not await self._ledger.return_to_line(job.id):
                    continue  # a callback named it at the last moment, or it was settled
                self._pins.pop(job.id, None)  # sent again with its server's key by then
                log.warning(
                    "job %s: no callback %.0f s after a createTask cut off by a stop or crash;"
                    " kie.ai most likely never got it, so it is sent again",
                    job.id,
                    self._clock() - sent_at,
                )
                return None
            await asyncio.sleep(ADOPT_CHECK_SECONDS)

    async def _named_meanwhile(self, job_id: int) -> str:
        """The task a callback recorded while this createTask was on the wire: a job sent again
        after the lost-send patience (`_adopted_task`) whose first request reached kie.ai after
        all, and called back just now. That task is the job's; the one just made is paid and
        unused. Raises `JobTaken` when the job was settled elsewhere instead."""
        current = await self._ledger.get_job(job_id)
        if current is None or current.state is not JobState.SUBMITTED or not current.task_id:
            raise JobTaken
        log.warning(
            "job %s: the callback of its first createTask came while it was sent again; that"
            " task is used, and the second one's image is unused",
            job_id,
        )
        return current.task_id

    def _lost_send_patience(self, job: Job) -> float:
        longest = self._account(job).polls.durations.longest()
        learned = LOST_SEND_TASK_MULTIPLE * longest if longest is not None else 0.0
        return min(max(LOST_SEND_MIN_PATIENCE, learned), self._limits.job_timeout)

    async def _uploaded(self, job: Job) -> ImageRequest:
        """The job's request with its references on kie.ai's file host, each uploaded the
        first time (and kept as it goes, so a resumed job uploads only those still missing)."""
        image = job.image
        inputs = image.input_urls
        for index in range(len(inputs), len(image.reference_urls)):
            try:
                # A folder per job and reference: the file host overwrites a file uploaded to
                # the same path, and two references may well share Discord's "image.png".
                folder = f"imagine-bot/job-{job.id}" + (f"/{index + 1}" if index else "")
                input_url = await self._account(job).kie.upload_reference(
                    image.reference_urls[index], upload_path=folder
                )
            except (KieAuthError, KieInsufficientCredits, KieMaintenance):
                raise
            except KieError as error:
                log.warning(
                    "job %s: reference image %s could not be uploaded: %s", job.id, index + 1, error
                )
                raise JobFailed(FailureKind.REFERENCE_FAILED) from None
            inputs = (*inputs, input_url)
            await self._ledger.set_input_urls(job.id, inputs)
        return dataclasses.replace(image, input_urls=inputs)

    async def _submit(self, job: Job, reporter: JobReporter, shown: LineShown) -> str:
        down_since: float | None = None  # when this job first found kie.ai down
        while True:
            down_since = await self._wait_for_kie(job, reporter, down_since)
            task_id = await self._send(job, reporter, shown)
            if task_id is not None:
                break
        # The job's one INFO line is its outcome's; this step is for DEBUG.
        if log.isEnabledFor(logging.DEBUG):
            context = job_context(job, task_id, None)
            log.debug("job %s submitted as task %s", job.id, task_id, extra=context)
        _report(reporter, Progress(Phase.GENERATING, job.created_at))
        return task_id

    async def _wait_for_kie(
        self, job: Job, reporter: JobReporter, down_since: float | None
    ) -> float | None:
        """Hold a job kie.ai has not seen while its circuit breaker is open, telling the member
        once; its units stay reserved. It gives up (and is refunded) only after the job's
        usual timeout, counted from when it first found kie.ai down."""
        breaker = self._account(job).kie.breaker
        if breaker.closed:
            return down_since
        now = self._clock()
        down_since = now if down_since is None else down_since
        _report(reporter, Progress(Phase.KIE_DOWN, job.created_at))
        remaining = down_since + self._limits.job_timeout - now
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                await breaker.wait_closed()
        except TimeoutError:
            raise JobFailed(FailureKind.TIMED_OUT) from None
        return down_since

    async def _send(self, job: Job, reporter: JobReporter, shown: LineShown) -> str | None:
        """One createTask for the job (429 and 455 retried by the client): its task id, or
        None when kie.ai went down before any task was made; the job is then reserved again
        and waits for kie.ai (`_wait_for_kie`)."""
        request = await self._uploaded(job)
        account = self._account(job)  # the same for the whole call, and recorded with the claim
        kie = account.kie
        turn = kie.submit_turn(job.user_id)
        now = self._clock()
        turn_at = now + turn.wait_seconds
        if turn.wait_seconds > 0 and shown.worth_showing(turn.position, turn_at, now):
            shown.note(turn.position, turn_at, now)
            _report(reporter, Progress(Phase.QUEUED, job.created_at, turn.position, turn_at))

        claimed = False  # a retry after 429/455 (nothing was created) is this run's own

        async def before_send() -> None:
            nonlocal claimed
            # A pause that came while this job waited for its turn holds it here, still
            # unsent: nothing new reaches kie.ai while the operator has generation paused.
            await self._gate.wait_open()
            if claimed:
                return
            if not kie.breaker.closed:
                raise _KieDown  # it went down while this job waited for its turn
            if self._stopping:  # still reserved: the next start sends it
                raise asyncio.CancelledError
            if self.accounts is not None and self.accounts.for_guild(job.guild_id) is not account:
                raise _KeyChanged  # a key set or removed while it waited: sent with the new one
            # Counted as sending before the claim's own await: a shutdown arriving meanwhile
            # must wait for this createTask, not cut it off with the job already "submitting"
            # (it would be refunded at the next start instead of sent).
            self._sending.add(job.id)
            self._all_sent.clear()
            if not await self._ledger.begin_submit(job.id, account.name):
                raise JobTaken  # not "reserved" any more: never send it from here
            self._pins[job.id] = account  # every later step of the job uses this account
            claimed = True

        try:
            task_id = await kie.create_task(
                request,
                callback_url=self.callback_url(job),
                before_send=before_send,
                queue_key=job.user_id,
            )
            if not await self._ledger.mark_submitted(job.id, task_id):
                task_id = await self._named_meanwhile(job.id)
        except _KieDown:
            return None
        except _KeyChanged:
            log.info("job %s: its server's kie.ai key changed; sending it with the new one", job.id)
            return None
        except (KieMaintenance, KieConnectionError):
            # Refused before any task existed (maintenance, or no connection at all). With
            # the breaker now open this is an outage, not the job's failure: it waits for
            # kie.ai again instead of being refunded. A 5xx is not retried: kie.ai may have
            # created the task before failing, and a second one would be a second paid image.
            if not claimed or kie.breaker.closed:
                raise
            if not await self._ledger.return_to_line(job.id):
                raise JobTaken from None
            self._pins.pop(job.id, None)  # sent again later, with its server's key by then
            log.info("job %s: kie.ai is down; back in line until it answers", job.id)
            return None
        finally:
            self._sending.discard(job.id)
            if not self._sending:
                self._all_sent.set()
        return task_id

    async def _wait(self, job: Job, task_id: str) -> TaskInfo:
        """Wait for the task's result through the shared poll scheduler, up to the deadline."""
        now = self._clock()
        submitted_at = job.submitted_at or now
        # A resumed job may have finished long ago: look at once.
        polls = self._account(job).polls
        watch = polls.watch(
            job.id,
            task_id,
            age=max(0.0, now - submitted_at),
            look_now=job.state is not JobState.RESERVED,
        )
        # Counted from submission: time spent in the bot's own line is not kie.ai's fault.
        deadline = submitted_at + self._limits.job_timeout
        # A job resumed after an outage longer than the timeout may have finished meanwhile:
        # it is asked about at least once before the deadline can end it.
        first_look_by = max(deadline, now + FIRST_LOOK_SECONDS)
        looked = False
        try:
            while True:
                remaining = (deadline if looked else first_look_by) - self._clock()
                if remaining <= 0:
                    raise JobFailed(FailureKind.TIMED_OUT)
                try:
                    async with asyncio.timeout(remaining):
                        info = await watch.updates.get()
                except TimeoutError:
                    raise JobFailed(FailureKind.TIMED_OUT) from None
                looked = True
                if info.finished and info.credits is not None:
                    await self._ledger.set_job_credits(job.id, info.credits)
                if info.state == "fail":
                    if blocked_by_safety_filter(info.fail_message):
                        raise JobFailed(FailureKind.CONTENT_FILTERED)
                    raise JobFailed(FailureKind.GENERATION_FAILED, info.fail_message)
                if info.succeeded:
                    if not info.result_urls:
                        raise JobFailed(FailureKind.BAD_RESPONSE)
                    return info
        finally:
            polls.unwatch(watch)

    async def _download(self, job: Job, info: TaskInfo) -> tuple[DownloadedImage, str]:
        """The image, from the first result URL that works, and that URL, within the job's own
        deadline (and at most DOWNLOAD_TIMEOUT_SECONDS over all the URLs)."""
        deadline = (job.submitted_at or self._clock()) + self._limits.job_timeout
        budget = min(
            self._limits.download_timeout, max(deadline - self._clock(), self._limits.min_download)
        )
        ends = self._clock() + budget
        last_error: DownloadError | None = None
        for url in info.result_urls:
            left = ends - self._clock()
            if left <= 0:
                break
            try:
                image = await self._account(job).kie.download(
                    url, max_bytes=self._limits.max_image_bytes, time_limit=left
                )
            except DownloadError as error:
                last_error = error
                continue
            return image, url
        raise last_error or DownloadError("no result URL could be fetched in time")

    async def _refund_and_report(
        self,
        job: Job,
        kind: FailureKind,
        detail: str | None,
        reporter: JobReporter,
        error: Exception | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        reason = f"{kind.value}: {error or detail or ''}"[:500]
        if not await self._ledger.refund(job.id, reason):
            return  # already finished elsewhere: never refund or report twice
        alerted = False
        if kind in KEY_PROBLEMS and self._account(job).own:
            # The server's own key: its managers fix it, not the operator.
            self._outcomes.refunded(job, kind.value, timeline, detail=reason)
            if self._alert_server is not None and job.guild_id is not None:
                try:
                    alerted = await self._alert_server(job.guild_id, kind)
                except Exception:
                    log.exception("job %s: could not alert the server's managers", job.id)
        elif kind in OPERATOR_PROBLEMS:
            # An error: the bot cannot generate images until the operator fixes the kie.ai
            # account (API key, credits or model).
            self._outcomes.refunded(job, kind.value, timeline, detail=reason, level=logging.ERROR)
            if self._alert_operator is not None:
                try:
                    alerted = await self._alert_operator(kind)
                except Exception:
                    log.exception("job %s: could not alert the operator", job.id)
        else:
            self._outcomes.refunded(job, kind.value, timeline, detail=reason)
        quota = await self._quota_after(job)
        failure = Failure(kind, quota, detail, operator_alerted=alerted)
        try:
            if job.in_batch:
                # Told with the batch: one message once every image of it has finished.
                await self.batches.failed(job, failure, reporter)
                return
            await reporter.fail(failure)
        except Exception:
            log.exception("job %s: could not tell the user about the failure", job.id)


@dataclass(eq=False, slots=True)
class _PlaceInLine:
    """A waiting job's entry in the fair-use line (`RunQueue.Seat`): one small object per
    waiting job, where a task would hold a stack of coroutines and their futures."""

    service: JobService
    job: Job
    reporter: JobReporter
    shown: LineShown
    go: Callable[[Job, LineShown], None]

    def waiting(self, wait: Wait) -> None:
        try:
            self.service._show_place(self.job, self.reporter, self.shown, wait)
        except Exception:
            # Showing a place is cosmetic: the job keeps it, and is told its turn all the same.
            log.warning("job %s: could not show its place in line", self.job.id, exc_info=True)

    def admitted(self) -> None:
        self.go(self.job, self.shown)


def _report(reporter: JobReporter, progress: Progress) -> None:
    # Progress is cosmetic: a failed edit must never fail the job.
    try:
        reporter.progress(progress)
    except Exception:
        log.warning("could not show progress %s", progress.phase, exc_info=True)
