"""How each job ended, told once: one log line with its figures, and the metrics.

A job's figures are its three stretches: the wait (from the charge to the submission to kie.ai:
the bot's line and kie.ai's rate limit), the generation (from the submission to the finished
task: kie.ai's time) and the delivery (from the finished task to the image on Discord). The
line carries them, the units and the model, and the ids (`job_id`, `guild_id`, `user_id`,
`task_id`, `outcome`) as fields a JSON log line shows; in text it reads as one sentence.
`JobService` calls this at each end (delivered, refunded, cancelled): never twice for a job,
since each end follows the ledger's one winning transition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.domain import Job
from bot.metrics import Metrics

log = logging.getLogger("bot.jobs")


@dataclass
class Timeline:
    """When a job passed each step, in Unix time; None: not in this run (or not at all)."""

    charged_at: float
    submitted_at: float | None = None
    finished_at: float | None = None


def job_context(job: Job, task_id: str | None, outcome: str | None) -> dict[str, object]:
    """What a log line about one job carries besides its text (`LOG_FORMAT=json` shows it)."""
    return {
        "job_id": job.id,
        "guild_id": job.guild_id,
        "user_id": job.user_id,
        "task_id": task_id,
        "outcome": outcome,
    }


def _between(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start), 3)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


class JobOutcomes:
    """One per `JobService`: the log line and the metrics for each step and end of a job."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics

    def charged(self, units: int) -> None:
        if self._metrics is not None:
            self._metrics.charged(units)

    def submitted(self, timeline: Timeline, at: float) -> None:
        timeline.submitted_at = at
        if self._metrics is not None:
            self._metrics.queue_wait.observe(max(0.0, at - timeline.charged_at))

    def finished(self, timeline: Timeline, at: float) -> None:
        timeline.finished_at = at
        if self._metrics is not None and timeline.submitted_at is not None:
            self._metrics.generation.observe(max(0.0, at - timeline.submitted_at))

    def delivered(
        self, job: Job, task_id: str | None, timeline: Timeline, at: float, *, via: str
    ) -> None:
        delivery = _between(timeline.finished_at, at)
        if self._metrics is not None:
            self._metrics.job_finished("delivered", "", 0)
            if delivery is not None:
                self._metrics.delivery_lag.observe(delivery)
        self._line(logging.INFO, job, task_id, f"delivered by {via}", None, timeline, delivery)

    def refunded(
        self,
        job: Job,
        failure: str,
        timeline: Timeline | None,
        *,
        detail: str,
        level: int = logging.WARNING,
    ) -> None:
        """`detail`: the failure as the ledger keeps it (kind, then what kie.ai or the
        download said)."""
        if self._metrics is not None:
            self._metrics.job_finished("refunded", failure, job.units)
        self._line(level, job, job.task_id, "refunded", detail, timeline, None, failure)

    def cancelled(self, job: Job, by_user: int) -> None:
        if self._metrics is not None:
            self._metrics.job_finished("cancelled", "cancelled", job.units)
        timeline = Timeline(job.created_at)
        told = f"by {by_user}"
        self._line(logging.INFO, job, None, "cancelled", told, timeline, None, "cancelled")

    def _line(
        self,
        level: int,
        job: Job,
        task_id: str | None,
        told: str,
        detail: str | None,
        timeline: Timeline | None,
        delivery: float | None,
        failure: str | None = None,
    ) -> None:
        """`told`: the outcome as the text says it ("delivered by reply"); the `outcome` field
        is its first word."""
        if not log.isEnabledFor(level):
            return
        timeline = timeline or Timeline(job.created_at, job.submitted_at)
        wait = _between(timeline.charged_at, timeline.submitted_at)
        generation = _between(timeline.submitted_at, timeline.finished_at)
        log.log(
            level,
            "job %s %s%s: wait %s, generation %s, delivery %s; %d unit%s, %s "
            "(server %s, member %s, task %s)",
            job.id,
            told,
            f" ({detail})" if detail else "",
            _seconds(wait),
            _seconds(generation),
            _seconds(delivery),
            job.units,
            "" if job.units == 1 else "s",
            job.image.model,
            job.guild_id if job.guild_id is not None else "DM",
            job.user_id,
            task_id or "-",
            extra={
                **job_context(job, task_id, told.split(" ", 1)[0]),
                "failure": failure,
                "wait_seconds": wait,
                "generation_seconds": generation,
                "delivery_seconds": delivery,
                "units": job.units,
                "model": job.image.model,
            },
        )
