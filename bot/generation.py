"""Making an image, as one use case: admit a request, charge it, and start its job.

One entry (`Generation.request`) serves `/imagine` and the Re-roll and Vary buttons alike: the
front end turns its interaction into a `JobRequest` and a `Requester` (how to answer the member),
and gets back `Admitted` or `Refused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from bot.admission import Admission, Asker, Refusal, RefusalReason
from bot.domain import Hold, Job, OverLimit
from bot.job_tasks import JobRunner
from bot.jobs import JobRequest, JobService
from bot.quota import QuotaBook

log = logging.getLogger(__name__)

# How long a stopping bot waits for requests between their checks and their charge: a burst's
# group commits take well under a second each, and Docker allows about ten for the whole stop.
SETTLE_SECONDS = 3.0
# Commands checked and answered at the same time. Enough to keep the database and Discord busy
# (a check is a few indexed reads); few enough that a burst keeps a few warm connections.
ADMISSIONS_AT_ONCE = 32
# Jobs started and not finished past which a new request's charge waits until no command is
# waiting for its first answer (at most CHARGE_WAITS_AT_MOST seconds). In a burst every charge
# made now takes the event loop from an acknowledgement due within 3 s, while a job with 40
# ahead of it starts no sooner for being charged sooner (kie.ai takes 20 tasks per 10 s). With
# fewer running, charges go at once: a burst's first jobs are submitted straight away.
CHARGE_AHEAD = 40
CHARGE_WAITS_AT_MOST = 1.5


class Unanswered:
    """How many commands are still waiting for their first answer (from asking for their turn
    until answered). Progress edits, and the charges of jobs far back in line, wait until there
    are none (`quiet`): in a burst, Discord's 3 s for an acknowledgement is a deadline, a place
    in line shown or charged a second later is not, and both cost the same CPU."""

    def __init__(self) -> None:
        self._count = 0
        self._none = asyncio.Event()
        self._none.set()

    def __len__(self) -> int:
        return self._count

    def arrived(self) -> None:
        self._count += 1
        self._none.clear()

    def answered(self) -> None:
        self._count -= 1
        if not self._count:
            self._none.set()

    async def quiet(self, within: float) -> None:
        """Return once every command has been answered, or after `within` seconds."""
        if self._count:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._none.wait()


class Turn:
    """A command's turn at admission (`Generation.turn`): held from before its first read
    until its answer is written (`give_way`), or until it is answered where the answer has no
    such moment. `arrived` is when it asked for the turn: Discord's 3 s count from then."""

    def __init__(self, gate: asyncio.Semaphore, arrived: float, unanswered: Unanswered) -> None:
        self._gate = gate
        self._unanswered = unanswered
        self.arrived = arrived
        self._held = True
        self._counted = True  # among the unanswered commands

    def give_way(self) -> None:
        """Let the next command in while this one's answer waits for Discord's reply, a round
        trip away on a real network: turns held through it would cap a burst at
        ADMISSIONS_AT_ONCE answers per round trip. The command still counts as unanswered
        (`Unanswered`) until `release`."""
        if self._held:
            self._held = False
            self._gate.release()

    def release(self) -> None:
        self.give_way()
        if self._counted:
            self._counted = False
            self._unanswered.answered()


# The turn the current command holds, if any (a context variable: one per command's task).
_turn: contextvars.ContextVar[Turn | None] = contextvars.ContextVar("_turn", default=None)


class _SlowAnswers:
    """Counts commands answered publicly before their checks, logged at most once a minute
    (a burst can cause thousands)."""

    EVERY = 60.0

    def __init__(self) -> None:
        self._count = 0
        self._logged_at = -self.EVERY

    def note(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._logged_at >= self.EVERY:
            log.warning(
                "admission checks are slow: %d commands answered publicly before their checks",
                self._count,
            )
            self._count = 0
            self._logged_at = now


class Requester(Protocol):
    """The member's side of one request: how the front end answers them (an interaction)."""

    async def acknowledge(self, sent: Callable[[], None] | None = None) -> None:
        """Answer publicly that the image is on its way, unless already answered; `sent` is
        called once the answer is written, before Discord's reply to it."""
        ...

    async def refuse(self, refusal: Refusal) -> None:
        """Tell the member privately why not (the first answer, where it still can be)."""
        ...

    async def age_restricted(self) -> bool:
        """Whether the request comes from an age-restricted channel (or a thread of one)."""
        ...


@dataclass(frozen=True)
class Admitted:
    job: Job  # charged and running; the acknowledged reply becomes its reply
    jobs: tuple[Job, ...] = ()  # every job of the request (several images: a batch)


@dataclass(frozen=True)
class Refused:
    refusal: Refusal  # the member has been told, and the refusal recorded


class Generation:
    """Admit, charge and start: the use case behind every way of asking for an image.

    Owns the order of the steps, so that a refusal is the interaction's first, private answer
    and leaves no public trace: the checks (`Admission.check`) must answer within Discord's
    3 seconds or the request is acknowledged first; an admitted request is acknowledged
    publicly, charged (`JobService.reserve`, which checks the limits again, atomically, and
    returns once its group of charges is committed) and handed to the `JobRunner`. Every
    refusal is told, then recorded (`Admission.record`). Built once by the composition root;
    called by the `/imagine` and result-button cogs.
    """

    def __init__(
        self,
        admission: Admission,
        jobs: JobService,
        quota: QuotaBook,
        runner: JobRunner,
        unanswered: Unanswered,
    ) -> None:
        self._admission = admission
        # Shared with the job replies, whose progress edits wait for it (`Unanswered.quiet`).
        self.unanswered = unanswered
        self._jobs = jobs
        self._quota = quota
        self._runner = runner
        self._admitting = asyncio.Semaphore(ADMISSIONS_AT_ONCE)
        self._slow = _SlowAnswers()
        self._in_flight = 0  # requests past the shutdown check and not yet answered
        self._settled = asyncio.Event()
        self._settled.set()

    async def settle(self, within: float = SETTLE_SECONDS) -> None:
        """Wait (at most `within` seconds) for the requests already admitted past the shutdown
        check to be charged or refused, so none is cut between its acknowledgement and its
        charge when the bot stops; call after `JobRunner.stop_accepting`."""
        try:
            async with asyncio.timeout(within):
                await self._settled.wait()
        except TimeoutError:
            log.warning("%d requests were still being admitted at shutdown", self._in_flight)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[Turn]:
        """A command's turn to be checked and answered, in arrival order, a few at a time.

        `request` takes one itself. A front end that reads before it can build the request
        (the member's defaults, their reference tray) takes the turn first and calls `request`
        inside it, so those reads wait their turn too: in a burst, every command reading at
        once is what makes every answer late. Within a turn, `request` uses that same turn and
        gives it up once the command is answered.
        """
        held = _turn.get()
        if held is not None:
            yield held
            return
        arrived = time.monotonic()
        self.unanswered.arrived()
        try:
            await self._admitting.acquire()
        except BaseException:
            self.unanswered.answered()
            raise
        taken = Turn(self._admitting, arrived, self.unanswered)
        token = _turn.set(taken)
        try:
            yield taken
        finally:
            _turn.reset(token)
            taken.release()

    async def request(self, request: JobRequest, requester: Requester) -> Admitted | Refused:
        if not self._runner.accepting:
            refusal = Refusal(RefusalReason.SHUTTING_DOWN)
            await requester.refuse(refusal)  # nothing to record: the bot is stopping
            return Refused(refusal)
        self._in_flight += 1
        self._settled.clear()
        try:
            return await self._admit(request, requester)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._settled.set()

    async def _admit(self, request: JobRequest, requester: Requester) -> Admitted | Refused:
        asker = Asker(
            user_id=request.user_id,
            guild_id=request.guild_id,
            channel_id=request.channel_id,
            role_ids=request.role_ids,
            prompt=request.image.prompt,
            # Every image of the request counts up front: all of them fit, or none is made.
            units=self._quota.costs.of(request.image) * request.count,
        )
        # This request's place among the member's commands, taken before the checks: the
        # checks of their later commands count it (see `JobLedger.over_limit`), so a member
        # asking past their quota in a burst is refused privately, as the first answer.
        hold = self._jobs.hold(request)
        try:
            # In arrival order, a few at a time: a burst's first commands are answered (and
            # charged, and submitted) at once, rather than every command advancing together
            # and all of them answering late, each on a connection of its own.
            async with self.turn() as turn:
                if not self._runner.accepting:  # the bot began stopping while this waited
                    self._jobs.release(hold)
                    refusal = Refusal(RefusalReason.SHUTTING_DOWN)
                    await requester.refuse(refusal)
                    return Refused(refusal)
                checked = await self._check(asker, hold, requester, turn.arrived)
                if checked is not None:
                    self._jobs.release(hold)
                    return await self._refuse(asker, checked, requester)
                # The charge is asked for while the acknowledgement is on its way (in a burst
                # it joins the next group commit sooner); the job starts once both are done.
                # A job far back in line is charged once answered (`_charge_later`).
                charging: asyncio.Future[list[Job] | OverLimit] | None = None
                if self._runner.running < CHARGE_AHEAD:
                    charging = asyncio.ensure_future(self._charge(request, requester, hold))
                try:
                    await requester.acknowledge(sent=turn.give_way)
                except BaseException:
                    # No public reply: the job, charged or about to be, still runs (its reply
                    # falls back to the channel), so its units are delivered or refunded.
                    if charging is None:
                        charging = asyncio.ensure_future(self._charge(request, requester, hold))
                    jobs = await asyncio.shield(charging)
                    if not isinstance(jobs, OverLimit):
                        for job in jobs:
                            self._runner.start(job)
                    raise
                turn.release()  # answered: the charge is waited for outside the turns
        except BaseException:
            self._jobs.release(hold)  # no-op once the charge was asked for
            raise
        if charging is None:
            charging = await self._charge_later(request, requester, hold)
        jobs = await charging
        if isinstance(jobs, OverLimit):  # someone else's charge got there first
            over = await self._admission.over_limit(asker, jobs)
            return await self._refuse(asker, over, requester)
        for job in jobs:
            self._runner.start(job)
        return Admitted(jobs[0], tuple(jobs))

    async def _check(
        self, asker: Asker, hold: Hold, requester: Requester, arrived: float
    ) -> Refusal | None:
        """The admission checks, answering publicly first if they would take Discord's time
        (counted from the command's arrival, so time spent waiting for a turn counts)."""
        answering: asyncio.Task[None] | None = None

        def answer_first() -> None:
            nonlocal answering
            self._slow.note()
            answering = asyncio.ensure_future(requester.acknowledge())

        # A timer rather than a task for the checks: they usually finish without waiting at
        # all, and in a burst a task and a wait per command cost the loop ~5 % of its time.
        left = self._admission.answer_within - (time.monotonic() - arrived)
        timer = asyncio.get_running_loop().call_later(max(0.0, left), answer_first)
        try:
            refusal = await self._admission.check(asker, hold)
        except BaseException:
            timer.cancel()
            if answering is not None:  # the public answer is not left half sent
                await asyncio.gather(answering, return_exceptions=True)
            raise
        timer.cancel()
        if answering is not None:
            await answering
        return refusal

    async def _charge_later(
        self, request: JobRequest, requester: Requester, hold: Hold
    ) -> asyncio.Future[list[Job] | OverLimit]:
        """The charge of an answered request far back in line, asked for once no command is
        waiting for its first answer (`CHARGE_AHEAD`). Its place among the member's commands is
        held meanwhile (`hold`): limits count it, and the charge checks them again. Waiting
        here, in the command's own task, rather than in a charge task of its own spares a
        burst thousands of tasks; the charge is asked for even if this wait is cancelled (the
        member was told the image is on its way)."""
        try:
            await self.unanswered.quiet(CHARGE_WAITS_AT_MOST)
        finally:
            charging = asyncio.ensure_future(self._charge(request, requester, hold))
        return charging

    async def _charge(
        self, request: JobRequest, requester: Requester, hold: Hold
    ) -> list[Job] | OverLimit:
        try:
            restricted = await requester.age_restricted()
            request = dataclasses.replace(request, age_restricted=restricted)
            return await self._jobs.reserve(request, hold)
        finally:
            self._jobs.release(hold)  # no-op once the charge was asked for

    async def _refuse(self, asker: Asker, refusal: Refusal, requester: Requester) -> Refused:
        await requester.refuse(refusal)
        await self._admission.record(asker, refusal)
        return Refused(refusal)
