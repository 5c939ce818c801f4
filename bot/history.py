"""A member's own history: listing it, showing a result again, and forgetting it.

Showing again (`/history list`, then a Show button) posts an earlier result once more, fetched
from kie.ai's link while kie.ai keeps the file. It is not a generation, so it charges nothing,
but it is a public post of the member's prompt and image: the server's rules apply as for
`/imagine` (bans, channels, blocked terms, the operator's pause), and an image made with kie.ai's
filter off is shown only in an age-restricted channel. The download has the same bounds as a
delivery's, and the post goes through the same `JobReporter` (re-encoding, upload limits).

Forgetting (`/history forget`) blanks the words and links of the member's finished jobs; their
units stay in the ledger, so quotas, budgets and spend reports do not move.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.admission import Admission, Asker, Refusal
from bot.domain import Job, JobState, ReplyTarget
from bot.jobs import DeliveryError, Finished, JobLimits, JobReporter
from bot.kie import RESULT_LIFETIME, DownloadedImage, DownloadError, KieClient
from bot.quota import QuotaBook
from bot.store import JobLedger

log = logging.getLogger(__name__)

# Stop offering a result an hour before kie.ai's deletion is due: the download takes a moment,
# and kie.ai's "14 days" is not to the second.
RESULT_MARGIN = 3600.0


class NotShown(enum.StrEnum):
    """Why a result was not shown again; the words are `bot/ui`'s."""

    UNKNOWN = "unknown"  # no such job for this member here (or forgotten, or not delivered)
    DELETED = "deleted"  # its message was deleted with the Delete button
    EXPIRED = "expired"  # kie.ai no longer has the file
    ADULT = "adult"  # made with kie.ai's filter off: only in an age-restricted channel
    UNDELIVERABLE = "undeliverable"  # Discord took no message anywhere


@dataclass(frozen=True)
class RuleRefused:
    """The server's or the operator's rules refuse the post (told, then `record`ed)."""

    refusal: Refusal
    asker: Asker


@dataclass(frozen=True)
class ShowRequest:
    """A member's press of Show: who, where, for which job, and how to answer."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    role_ids: tuple[int, ...]
    job_id: int
    age_restricted: bool
    locale: str | None = None  # the presser's Discord locale: the re-post speaks it


class History:
    """A member's own history. Built once by the composition root; called by `cogs/history.py`.

    `reply_for` makes the reporter that posts a result (the same kind every delivery uses, with
    no audit post: the generation was audited when it was made).
    """

    def __init__(
        self,
        ledger: JobLedger,
        admission: Admission,
        quota: QuotaBook,
        kie: KieClient,
        limits: JobLimits,
        *,
        reply_for: Callable[[Job], JobReporter],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._admission = admission
        self._quota = quota
        self._kie = kie
        self._limits = limits
        self._reply_for = reply_for
        self._clock = clock

    async def entries(self, user_id: int, guild_id: int | None, limit: int) -> list[Job]:
        """The member's latest finished jobs here (not forgotten ones), newest first."""
        return await self._ledger.recent_jobs(user_id, guild_id, limit)

    def showable(self, job: Job) -> bool:
        """Whether a Show button is worth offering for this entry."""
        return self._not_showable(job) is None

    async def check(self, request: ShowRequest) -> Job | NotShown | RuleRefused:
        """The job to show, or why not: the member's own entry first (a forged button learns
        nothing about anyone else's jobs), then the server's rules, read-only."""
        job = await self._ledger.get_job(request.job_id)
        if (
            job is None
            or job.user_id != request.user_id
            or job.guild_id != request.guild_id
            or job.forgotten_at is not None
        ):
            return NotShown.UNKNOWN
        problem = self._not_showable(job)
        if problem is not None:
            return problem
        if not job.image.nsfw_checker and not request.age_restricted:
            return NotShown.ADULT
        asker = self._asker(request, job)
        refusal = await self._admission.check(asker)
        return job if refusal is None else RuleRefused(refusal, asker)

    async def record(self, refused: RuleRefused) -> None:
        """After the member was told: counted and audited as any refused request."""
        await self._admission.record(refused.asker, refused.refusal)

    async def show(self, request: ShowRequest, job: Job, reply: ReplyTarget) -> NotShown | None:
        """Fetch the image from kie.ai and post it as the answer to `reply`; None: shown."""
        budget = self._limits.download_timeout
        url = job.image_url
        assert url is not None  # `check` passed
        try:
            image = await self._kie.download(
                url, max_bytes=self._limits.max_image_bytes, time_limit=budget
            )
        except DownloadError as error:
            log.info("job %s: kie.ai's copy could not be fetched again: %s", job.id, error)
            return NotShown.EXPIRED
        # The earlier job, answered through this press: its reply, its channel, a new nonce
        # (Discord would drop a channel post that repeats the first delivery's).
        shown = dataclasses.replace(
            job,
            reply=reply,
            channel_id=request.channel_id,
            nonce=secrets.token_hex(10),
            locale=request.locale,
        )
        return await self._post(shown, image, request.role_ids)

    async def forget(self, user_id: int, guild_id: int | None, everywhere: bool) -> int:
        """Forget the member's finished jobs here (or everywhere); how many. Logged by count
        only: the member's own privacy action is nobody else's business."""
        count = await self._ledger.forget_history(user_id, guild_id, everywhere)
        log.info(
            "member %s forgot %d finished jobs (%s)",
            user_id,
            count,
            "everywhere" if everywhere else f"server {guild_id}",
        )
        return count

    async def _post(
        self, job: Job, image: DownloadedImage, role_ids: tuple[int, ...]
    ) -> NotShown | None:
        quota = await self._quota.member_status(job.user_id, job.guild_id, role_ids)
        finished = Finished(job, image, 0.0, quota, shown_again=True)
        try:
            await self._reply_for(job).deliver(finished)
        except DeliveryError as error:
            log.warning("job %s: could not show the result again: %s", job.id, error)
            return NotShown.UNDELIVERABLE
        log.info("job %s shown again from /history", job.id)
        return None

    def _not_showable(self, job: Job) -> NotShown | None:
        if job.state is not JobState.DELIVERED or job.forgotten_at is not None:
            return NotShown.UNKNOWN
        if job.deleted_at is not None:
            return NotShown.DELETED
        if job.image_url is None or job.delivered_at is None:
            return NotShown.EXPIRED  # delivered before the bot kept kie.ai's link
        if self._clock() > job.delivered_at + RESULT_LIFETIME - RESULT_MARGIN:
            return NotShown.EXPIRED
        return None

    @staticmethod
    def _asker(request: ShowRequest, job: Job) -> Asker:
        # units=0: a re-post charges nothing, so no quota or budget can refuse it.
        return Asker(
            user_id=request.user_id,
            guild_id=request.guild_id,
            channel_id=request.channel_id,
            role_ids=request.role_ids,
            prompt=job.image.prompt,
            units=0,
        )
