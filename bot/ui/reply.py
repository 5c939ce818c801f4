"""`DiscordReply`: shows one job's progress and outcome to its requester, wherever that is possible.

The answer goes, in order of preference:
1. into the interaction's own reply, while its token lives (15 minutes);
2. into the channel as a bot message that mentions only the requester (token expired, or the
   reply was deleted: the member paid for the image, so it is delivered rather than dropped);
   never for a private job (the member's /settings), which skips to
3. by direct message, where the bot cannot post in the channel. Where that fails too, the
   job fails and its units go back (a private image is never posted publicly).

A route that fails because Discord itself is down (a 5xx, a 429 left over, no answer at all) is
not skipped: `DiscordUnavailable` tells the job to try again later (`bot/redelivery.py`).

It is built from the job row alone, so a job resumed after a restart is answered the same way
as a fresh one. Progress edits are coalesced: only the newest state is shown, only when it
changed, and at most once every `min_interval` seconds (interaction webhooks have small buckets).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import discord

from bot.batches import BatchOutcome
from bot.domain import DeliveryRoute, Job
from bot.i18n import use_locale
from bot.images import Reencoder
from bot.jobs import Delivery, DeliveryError, Failure, Finished, Phase, Progress
from bot.redelivery import DiscordUnavailable
from bot.ui import messages
from bot.ui.audit import AuditLog
from bot.ui.buttons import batch_view, cancel_view, result_view
from bot.ui.progress_edits import ProgressEdits

log = logging.getLogger(__name__)
# Discord not reachable at all (a dropped connection, a timeout): no HTTP status to act on.
_UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError)

NO_PINGS = discord.AllowedMentions.none()
TOKEN_LIFETIME = 15 * 60.0
# Stop using a token a little early: a request sent at 14:59 may arrive after 15:00.
TOKEN_MARGIN = 30.0
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
# Phases in which the job has not reached kie.ai: its reply carries a Cancel button.
CANCELLABLE = frozenset({Phase.WAITING, Phase.QUEUED, Phase.PAUSED, Phase.KIE_DOWN})
# Discord error codes that mean "this reply cannot be edited any more".
_REPLY_GONE_CODES = {10008, 10015, 50027}


def _outage(error: discord.HTTPException) -> bool:
    """Discord's own trouble (a 5xx, or a 429 discord.py did not wait out), not a refusal of
    this message: the same route is worth trying again later (`bot/redelivery.py`)."""
    return error.status >= 500 or error.status == 429


class DiscordReply:
    """A `JobReporter` for one job. Its texts speak the job's stored locale (the interaction
    that asked for it), whatever task runs the job: a restart's resume, the line's start."""

    def __init__(
        self,
        client: discord.Client,
        job: Job,
        *,
        min_interval: float = 2.0,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
        reencoder: Reencoder,
        edits: ProgressEdits,
    ) -> None:
        self._client = client
        # Progress edits are sent by the bot's one dispatcher, a few at a time, after the
        # commands still unanswered (`ProgressEdits`): a reply waiting to be edited is no task.
        self._edits = edits
        self._reencoder = reencoder  # shared by every job: one worker process for them all
        self._job = job
        self._audit = audit
        self._posted_url: str | None = None
        self._min_interval = min_interval
        self._clock = clock
        self._reply_usable = job.reply is not None
        # The deferral ("thinking…") counts as the reply's first edit: the first progress edit
        # waits `min_interval` after the command like any other, so in a burst the commands
        # still waiting for their acknowledgement go first, and a job that starts at once
        # never shows a place in line at all.
        self._last_edit = job.reply.created_at if job.reply else float("-inf")
        # What the reply shows, as text: one string per waiting reply, where the embed's
        # nested dicts were several objects each for the garbage collector to walk.
        self._shown: str | None = None
        # The latest progress not shown yet; its embed is built only when it is sent (in a
        # burst, most progress is replaced before its edit's turn comes).
        self._pending: tuple[Progress, str | None] | None = None
        self._queued = False  # waiting in `ProgressEdits` for its turn
        self._on_wire: asyncio.Event | None = None  # set once the progress edit sent has ended
        self._outcome_started = False
        self._nonce: str | None = None  # a batch's: its first job's, whichever job sends it

    # --- progress ---------------------------------------------------------------------------

    def progress(self, progress: Progress, images: str | None = None) -> None:
        """Show `progress` (a batch's: its least advanced job's, with `images` counting where
        each of them is)."""
        if not self._token_alive():
            return  # no live reply to update; the outcome will be posted
        self._pending = (progress, images)
        self._queue_edit()

    def _queue_edit(self) -> None:
        """Ask for an edit turn, `min_interval` after the last edit, unless one is asked for
        or on the wire (its end asks again for the progress that arrived meanwhile)."""
        if self._queued or self._on_wire is not None or self._pending is None:
            return
        if not self._token_alive():
            return
        self._queued = True
        self._edits.schedule(self, self._last_edit + self._min_interval - self._clock())

    async def send_progress(self) -> None:
        """This reply's edit turn (`ProgressEdits`): show the newest progress, if it changes
        what the reply shows."""
        self._queued = False
        pending, self._pending = self._pending, None
        if pending is None or not self._token_alive():
            return
        progress, images = pending
        with use_locale(self._job.locale):
            embed = messages.progress_embed(progress, self._job, images)
        # Cancel only while kie.ai has not got the job: after that the image is paid for.
        cancellable = progress.phase in CANCELLABLE
        shown = json.dumps([embed.to_dict(), cancellable], sort_keys=True)
        if shown == self._shown:
            return
        on_wire = self._on_wire = asyncio.Event()
        try:
            # None takes the button away. The view is built for the edit, not kept: a waiting
            # reply holds no view objects (discord.py keeps none of a fully dynamic view).
            view = cancel_view(self._job.id) if cancellable else None
            await self._edit_reply(embed=embed, view=view)
            self._shown = shown
        except discord.HTTPException as error:
            log.info("job %s: progress edit failed (%s)", self._job.id, error.status)
            self._note_reply_error(error)
        except _UNREACHABLE as error:  # best effort: the next progress or the outcome follows
            log.info("job %s: progress edit failed (%s)", self._job.id, type(error).__name__)
        except RuntimeError:
            if not self._client.is_closed():
                raise
            # The bot closed its HTTP session under this edit: the job resumes, and shows
            # its progress again, at the next start.
            self._pending = None
        finally:
            self._on_wire = None
            on_wire.set()
            self._last_edit = self._clock()
        self._queue_edit()  # progress that arrived while this edit was on the wire

    async def _stop_progress(self) -> None:
        """Drop pending progress; let an edit already on the wire finish so it lands first."""
        self._pending = None  # a turn still to come finds nothing to send
        if self._on_wire is not None:
            await self._on_wire.wait()

    async def stop(self) -> None:
        """The job was cancelled: nothing more is shown from here (the press answers)."""
        self._outcome_started = True
        await self._stop_progress()

    async def show_paused(self) -> None:
        """Tell a waiting member the bot is restarting and their image is not lost."""
        with use_locale(self._job.locale):
            await self._stop_progress()
            if not self._token_alive() or self._outcome_started:
                return  # an image or a refund notice is (or is about to be) there: leave it
            embed = messages.paused_embed(self._job.image.prompt)
            try:
                await self._edit_reply(embed=embed)
            except discord.HTTPException as error:
                self._note_reply_error(error)
            except _UNREACHABLE as error:  # stopping anyway; the job resumes on the next start
                log.info("job %s: restart notice failed (%s)", self._job.id, type(error).__name__)

    # --- outcome -----------------------------------------------------------------------------

    async def deliver(self, finished: Finished) -> Delivery:
        with use_locale(self._job.locale):
            return await self._deliver(finished)

    async def _deliver(self, finished: Finished) -> Delivery:
        self._outcome_started = True
        await self._stop_progress()
        image = finished.image
        limit = self._job.reply.attachment_limit if self._job.reply else DEFAULT_UPLOAD_LIMIT
        attempt_limit = limit
        for _ in range(3):
            stem = f"imagine-{self._job.id}"
            # An image that fits goes as is; a larger one is re-encoded in a worker process.
            fitted = await self._reencoder.fit(image.data, image.content_type, attempt_limit, stem)
            if fitted is None:
                link_note = messages.link_only_note(len(image.data), limit, image.url)
                embed = messages.result_embed(finished, "", link_note)
                via = await self._send_outcome(embed, None, ready=True)
                return Delivery(via, self._posted_url)
            note: str | None = None
            if fitted.reencoded:
                note = messages.resized_note(len(image.data), len(fitted.data), limit, image.url)
            filename, shown_in_embed = fitted.filename, fitted.filename
            if self._job.spoiler:
                # An embed's image cannot be blurred: the file alone carries the picture.
                filename, shown_in_embed = f"SPOILER_{fitted.filename}", ""
            embed = messages.result_embed(finished, shown_in_embed, note)
            try:
                via = await self._send_outcome(embed, (fitted.data, filename), ready=True)
            except _TooLarge:
                # Discord applied a lower limit than the interaction reported: halve and retry.
                log.info("job %s: Discord refused the file as too large; shrinking", self._job.id)
                attempt_limit = len(fitted.data) // 2
                continue
            if self._audit is not None:
                # The image reached Discord: nothing after this may change the outcome.
                try:
                    await self._audit.generation(self._job, self._posted_url)
                except Exception:
                    log.warning("job %s: the audit post failed", self._job.id, exc_info=True)
            return Delivery(via, self._posted_url)
        raise DeliveryError("Discord refused the image as too large even after shrinking")

    async def deliver_batch(self, outcome: BatchOutcome) -> Delivery:
        """A batch's images as attachments of one message (Discord shows them as a gallery),
        with a Vary and a Use button per image; its failure when none was made."""
        with use_locale(self._job.locale):
            return await self._deliver_batch(outcome)

    async def _deliver_batch(self, outcome: BatchOutcome) -> Delivery:
        self._outcome_started = True
        await self._stop_progress()
        self._nonce = outcome.jobs[0].nonce
        if not outcome.finished:
            failure = outcome.failures[-1] if outcome.failures else None
            embed = messages.batch_failure_embed(outcome, failure)
            via = await self._send_outcome(embed, None, ready=False)
            return Delivery(via, self._posted_url)
        limit = self._job.reply.attachment_limit if self._job.reply else DEFAULT_UPLOAD_LIMIT
        # Every image shares one upload: each gets an equal part of the limit, so that the
        # whole message fits what Discord accepts for one file.
        share = limit // len(outcome.finished)
        for _ in range(3):
            files: list[tuple[bytes, str]] = []
            notes: list[str] = []
            for number, finished in enumerate(outcome.finished, 1):
                image = finished.image
                stem = f"imagine-{finished.job.id}"
                fitted = await self._reencoder.fit(image.data, image.content_type, share, stem)
                if fitted is None:
                    notes.append(
                        f"{number}: {messages.link_only_note(len(image.data), share, image.url)}"
                    )
                    continue
                if fitted.reencoded:
                    notes.append(messages.reduced_note(number, image.url))
                prefix = "SPOILER_" if finished.job.spoiler else ""
                files.append((fitted.data, f"{prefix}{fitted.filename}"))
            embed = messages.batch_result_embed(outcome, notes)
            view = batch_view([f.job.id for f in outcome.finished])
            try:
                via = await self._send_outcome(embed, None, ready=True, files=files, view=view)
            except _TooLarge:
                log.info(
                    "batch %s: Discord refused the files as too large", outcome.jobs[0].batch_id
                )
                share //= 2
                continue
            if self._audit is not None:
                for finished in outcome.finished:
                    try:
                        await self._audit.generation(finished.job, self._posted_url)
                    except Exception:
                        log.warning("job %s: the audit post failed", finished.job.id, exc_info=True)
            return Delivery(via, self._posted_url)
        raise DeliveryError("Discord refused the images as too large even after shrinking")

    async def fail(self, failure: Failure) -> None:
        with use_locale(self._job.locale):
            self._outcome_started = True
            await self._stop_progress()
            embed = messages.failure_embed(failure, self._job.image.prompt, self._job.units)
            try:
                await self._send_outcome(embed, None, ready=False)
            except (DeliveryError, DiscordUnavailable) as error:
                log.warning("job %s: could not report the failure: %s", self._job.id, error)

    async def _send_outcome(
        self,
        embed: discord.Embed,
        file: tuple[bytes, str] | None,
        *,
        ready: bool,
        files: list[tuple[bytes, str]] | None = None,
        view: discord.ui.View | None = None,
    ) -> DeliveryRoute:
        buffers: list[io.BytesIO] = []
        files = files if files is not None else ([file] if file is not None else [])

        def attachments() -> list[discord.File]:
            made = []
            for data, filename in files:
                buffer = io.BytesIO(data)
                buffers.append(buffer)
                made.append(discord.File(buffer, filename=filename))
            return made

        try:
            return await self._route_outcome(embed, attachments, ready=ready, view=view)
        finally:
            # discord.File ties its buffer into a reference cycle that only the cyclic garbage
            # collector frees, which may be many images later; closing it frees the image now.
            for buffer in buffers:
                io.BytesIO.close(buffer)

    async def _route_outcome(
        self,
        embed: discord.Embed,
        attachments: Callable[[], list[discord.File]],
        *,
        ready: bool,
        view: discord.ui.View | None = None,
    ) -> DeliveryRoute:
        # A result gets its buttons; a failure has nothing to re-roll or delete.
        if view is None:
            view = result_view(self._job.id) if ready else discord.ui.View()
        if self._token_alive():
            try:
                message = await self._edit_reply(embed=embed, attachments=attachments(), view=view)
                self._posted_url = message.jump_url
                return DeliveryRoute.REPLY
            except discord.HTTPException as error:
                if error.status == 413:
                    raise _TooLarge from None
                if _outage(error):  # the reply is still there: edit it again later
                    raise DiscordUnavailable(f"reply edit: HTTP {error.status}") from None
                self._note_reply_error(error)
                log.info("job %s: reply not editable (%s); posting instead", self._job.id, error)
            except _UNREACHABLE as error:
                raise DiscordUnavailable(f"reply edit: {type(error).__name__}") from None
        content = messages.requester_note(self._job.user_id, ready)
        # A private result never goes to the channel: a DM keeps it the member's alone.
        if self._job.channel_id is not None and not self._job.private:
            channel = self._client.get_partial_messageable(self._job.channel_id)
            try:
                await self._post(channel, content, embed, attachments(), view)
                return DeliveryRoute.CHANNEL
            except discord.HTTPException as error:
                if error.status == 413:
                    raise _TooLarge from None
                if _outage(error):  # the channel may well take it once Discord is back
                    raise DiscordUnavailable(f"channel post: HTTP {error.status}") from None
                log.info(
                    "job %s: cannot post in the channel (%s); trying a DM", self._job.id, error
                )
            except _UNREACHABLE as error:
                raise DiscordUnavailable(f"channel post: {type(error).__name__}") from None
        try:
            user = await self._client.fetch_user(self._job.user_id)
            await self._post(user, content, embed, attachments(), view)
            return DeliveryRoute.DM
        except discord.HTTPException as error:
            if error.status == 413:
                raise _TooLarge from None
            if _outage(error):
                raise DiscordUnavailable(f"direct message: HTTP {error.status}") from None
            raise DeliveryError(f"no way to reach the requester ({error.status})") from None
        except _UNREACHABLE as error:
            raise DiscordUnavailable(f"direct message: {type(error).__name__}") from None

    async def _post(
        self,
        where: discord.abc.Messageable,
        content: str,
        embed: discord.Embed,
        files: list[discord.File],
        view: discord.ui.View,
    ) -> None:
        """A message outside the interaction: it may ping the requester, and nobody else.

        The job's nonce makes Discord drop a second copy, should a crash make us post again.
        """
        only_requester = discord.AllowedMentions(
            everyone=False,
            roles=False,
            replied_user=False,
            users=[discord.Object(self._job.user_id)],
        )
        message = await where.send(
            content,
            embed=embed,
            files=files,
            allowed_mentions=only_requester,
            nonce=self._nonce or self._job.nonce,
            view=view,
        )
        self._posted_url = message.jump_url

    # --- the interaction reply ----------------------------------------------------------------

    def _token_alive(self) -> bool:
        reply = self._job.reply
        if reply is None or not self._reply_usable:
            return False
        return self._clock() < reply.created_at + TOKEN_LIFETIME - TOKEN_MARGIN

    def _note_reply_error(self, error: discord.HTTPException) -> None:
        if error.code in _REPLY_GONE_CODES or error.status in (401, 404):
            self._reply_usable = False

    async def _edit_reply(self, **fields: Any) -> discord.WebhookMessage:
        reply = self._job.reply
        assert reply is not None
        # Built for each edit rather than kept: thousands of waiting replies hold none.
        webhook = discord.Webhook.partial(reply.application_id, reply.token, client=self._client)
        # "@original" is Discord's documented alias for the interaction's reply.
        message: discord.WebhookMessage = await webhook.edit_message(  # type: ignore[call-overload]
            "@original",
            content=None,
            allowed_mentions=NO_PINGS,
            **fields,
        )
        return message


class _TooLarge(Exception):
    """Discord answered 413 for the file."""
