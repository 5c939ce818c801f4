"""`InteractionReply`: shows a job's progress and outcome on the interaction's original reply.

Progress edits are coalesced: only the newest state is shown, only when it changed, and at most
once every `min_interval` seconds, because interaction webhooks have small rate-limit buckets.
The final edit is never delayed: it is what the user is waiting for.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord

from bot import messages
from bot.images import fit_image
from bot.jobs import DeliveryError, Failure, Finished, Progress
from bot.store import Job

if TYPE_CHECKING:
    from bot.client import ImagineBot

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()


class InteractionReply:
    """A `JobReporter` bound to one interaction and the job it started."""

    def __init__(
        self,
        interaction: discord.Interaction[ImagineBot],
        job: Job,
        *,
        min_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interaction = interaction
        self._job = job
        self._min_interval = min_interval
        self._clock = clock
        self._last_edit = float("-inf")
        self._shown: dict[str, Any] | None = None
        self._pending: discord.Embed | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._editing = False

    async def progress(self, progress: Progress) -> None:
        job = self._job
        self._pending = messages.progress_embed(
            progress, job.prompt, job.aspect_ratio, job.resolution
        )
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"progress-{job.id}")

    async def _flush(self) -> None:
        wait = self._last_edit + self._min_interval - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        embed, self._pending = self._pending, None
        if embed is None or embed.to_dict() == self._shown:
            return
        self._editing = True
        try:
            await self._interaction.edit_original_response(
                content=None, embed=embed, allowed_mentions=NO_PINGS
            )
            self._shown = embed.to_dict()
        except discord.HTTPException as error:
            log.info("job %s: progress edit failed: %s", self._job.id, error.status)
        finally:
            self._editing = False
            self._last_edit = self._clock()

    async def _stop_progress(self) -> None:
        """Drop pending progress; let an edit already on the wire finish so it lands first."""
        self._pending = None
        flusher = self._flusher
        if flusher is None or flusher.done():
            return
        if self._editing:
            await asyncio.gather(flusher, return_exceptions=True)
        else:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)

    async def deliver(self, finished: Finished) -> None:
        await self._stop_progress()
        image = finished.image
        limit = self._interaction.filesize_limit
        stem = f"imagine-{self._job.id}"
        # Re-encoding a large image is CPU work: keep it off the event loop.
        fitted = await asyncio.to_thread(fit_image, image.data, image.content_type, limit, stem)
        attachments: list[discord.File] = []
        if fitted is None:
            note = messages.link_only_note(len(image.data), limit, image.url)
            filename = ""
        else:
            if fitted.reencoded:
                note = messages.resized_note(len(image.data), len(fitted.data), limit, image.url)
            else:
                note = None
            filename = fitted.filename
            attachments.append(discord.File(io.BytesIO(fitted.data), filename=filename))
        embed = messages.result_embed(finished, filename, note)
        try:
            await self._interaction.edit_original_response(
                content=None, embed=embed, attachments=attachments, allowed_mentions=NO_PINGS
            )
        except discord.HTTPException as error:
            raise DeliveryError(f"Discord answered {error.status} ({error.code})") from None

    async def fail(self, failure: Failure) -> None:
        await self._stop_progress()
        embed = messages.failure_embed(failure, self._job.prompt, self._job.units)
        await self._interaction.edit_original_response(
            content=None, embed=embed, attachments=[], allowed_mentions=NO_PINGS
        )
