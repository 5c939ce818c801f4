"""One reply for the jobs of a batch: its jobs report to one shared `DiscordReply`.

Each job of a request for several images runs on its own, but they share the interaction's
reply: their progress is merged (the least advanced job is shown, with where each image is, and
the Cancel button while any of them has not reached kie.ai), and the batch is delivered once
(`Batches`, in the core, decides when).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.batches import BatchOutcome
from bot.domain import Job
from bot.i18n import use_locale
from bot.jobs import Delivery, Failure, Finished, Phase, Progress
from bot.ui import messages
from bot.ui.reply import DiscordReply

# Least advanced first: the phase a batch's reply shows.
_ORDER = (Phase.WAITING, Phase.PAUSED, Phase.KIE_DOWN, Phase.QUEUED, Phase.GENERATING)


@dataclass(eq=False)
class _Shared:
    reply: DiscordReply
    progress: dict[int, Progress] = field(default_factory=dict)  # job id -> its latest
    members: set[int] = field(default_factory=set)  # job ids still reporting
    paused_shown: bool = False  # the restart notice, once for the whole batch


class BatchReplies:
    """The shared replies of the batches running in this process, by batch id."""

    def __init__(self, make_reply: Callable[[Job], DiscordReply]) -> None:
        self._make_reply = make_reply
        self._shared: dict[int, _Shared] = {}

    def member(self, job: Job) -> BatchMemberReply:
        assert job.batch_id is not None
        shared = self._shared.get(job.batch_id)
        if shared is None:
            shared = self._shared[job.batch_id] = _Shared(self._make_reply(job))
        shared.members.add(job.id)
        return BatchMemberReply(self, job, shared)

    def forget(self, job: Job) -> None:
        self._shared.pop(job.batch_id or 0, None)


class BatchMemberReply:
    """One job's `JobReply`, reporting into its batch's shared reply."""

    def __init__(self, replies: BatchReplies, job: Job, shared: _Shared) -> None:
        self._replies = replies
        self._job = job
        self._shared = shared

    def progress(self, progress: Progress) -> None:
        shared = self._shared
        shared.progress[self._job.id] = progress
        self._show()

    def _show(self) -> None:
        shared = self._shared
        shown = [p for job_id, p in shared.progress.items() if job_id in shared.members]
        if not shown:
            return
        least = min(shown, key=lambda p: _ORDER.index(p.phase))
        counts = {phase: sum(p.phase is phase for p in shown) for phase in _ORDER}
        with use_locale(self._job.locale):  # the batch's request's language, as its reply's
            images = messages.batch_progress_text(counts)
        shared.reply.progress(least, images)

    async def deliver(self, finished: Finished) -> Delivery:
        return await self._shared.reply.deliver(finished)  # not used: batches deliver whole

    async def deliver_batch(self, outcome: BatchOutcome) -> Delivery:
        try:
            return await self._shared.reply.deliver_batch(outcome)
        finally:
            self._replies.forget(self._job)

    async def fail(self, failure: Failure) -> None:
        await self._shared.reply.fail(failure)  # not used: batches report failures whole

    async def show_paused(self) -> None:
        if not self._shared.paused_shown:
            self._shared.paused_shown = True
            await self._shared.reply.show_paused()

    async def stop(self) -> None:
        """This job was cancelled: the reply shows the others (or stops, if none is left)."""
        shared = self._shared
        shared.members.discard(self._job.id)
        shared.progress.pop(self._job.id, None)
        if not shared.members:
            await shared.reply.stop()
        else:
            self._show()  # the Cancel button goes if none of the others is waiting
