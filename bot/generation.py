"""Making an image, as one use case: admit a request, charge it, and start its job.

One entry (`Generation.request`) serves `/imagine` and the Re-roll and Vary buttons alike: the
front end turns its interaction into a `JobRequest` and a `Requester` (how to answer the member),
and gets back `Admitted` or `Refused`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Protocol

from bot.admission import Admission, Asker, Refusal, RefusalReason
from bot.domain import Hold, Job, OverLimit
from bot.job_tasks import JobRunner
from bot.jobs import JobRequest, JobService
from bot.quota import QuotaBook

log = logging.getLogger(__name__)


class Requester(Protocol):
    """The member's side of one request: how the front end answers them (an interaction)."""

    async def acknowledge(self) -> None:
        """Answer publicly that the image is on its way, unless already answered."""
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
        self, admission: Admission, jobs: JobService, quota: QuotaBook, runner: JobRunner
    ) -> None:
        self._admission = admission
        self._jobs = jobs
        self._quota = quota
        self._runner = runner

    async def request(self, request: JobRequest, requester: Requester) -> Admitted | Refused:
        asker = Asker(
            user_id=request.user_id,
            guild_id=request.guild_id,
            channel_id=request.channel_id,
            role_ids=request.role_ids,
            prompt=request.image.prompt,
            # Every image of the request counts up front: all of them fit, or none is made.
            units=self._quota.costs.units(request.image.resolution) * request.count,
        )
        if not self._runner.accepting:
            refusal = Refusal(RefusalReason.SHUTTING_DOWN)
            await requester.refuse(refusal)  # nothing to record: the bot is stopping
            return Refused(refusal)
        # This request's place among the member's commands, taken before the checks: the
        # checks of their later commands count it (see `JobLedger.over_limit`), so a member
        # asking past their quota in a burst is refused privately, as the first answer.
        hold = self._jobs.hold(request)
        try:
            checking = asyncio.ensure_future(self._admission.check(asker, hold))
            done, _ = await asyncio.wait({checking}, timeout=self._admission.answer_within)
            if not done:
                # The checks are indexed reads, but a busy database must not cost Discord's 3 s.
                log.warning("admission checks are slow; answering publicly first")
                await requester.acknowledge()
            checked = await checking
        except BaseException:
            self._jobs.release(hold)
            raise
        if checked is not None:
            self._jobs.release(hold)
            return await self._refuse(asker, checked, requester)
        # The charge is asked for while the acknowledgement is on its way (in a burst it joins
        # the next group commit sooner); the job starts only once both are done.
        charging = asyncio.ensure_future(self._charge(request, requester, hold))
        try:
            await requester.acknowledge()
        except BaseException:
            # No public reply: the job, charged or about to be, still runs (its reply falls
            # back to the channel), so its units are delivered or refunded like any others.
            jobs = await asyncio.shield(charging)
            if not isinstance(jobs, OverLimit):
                for job in jobs:
                    self._runner.start(job)
            raise
        jobs = await charging
        if isinstance(jobs, OverLimit):  # someone else's charge got there first
            over = await self._admission.over_limit(asker, jobs)
            return await self._refuse(asker, over, requester)
        for job in jobs:
            self._runner.start(job)
        return Admitted(jobs[0], tuple(jobs))

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
