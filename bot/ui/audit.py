"""The optional audit-log channel: each generation and each audit event, with no pings."""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp
import discord

from bot.admin_events import AuditEvent
from bot.domain import Job
from bot.i18n import use_locale
from bot.moderation import Moderation
from bot.ui import messages, server_messages

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()


class AuditLog:
    """Posts to a server's audit channel: the `AuditSink` of `AdminEvents` and `Admission`, and
    the record of each delivered generation (`DiscordReply`). Best effort throughout. One per
    process, built by the composition root.

    The channel is the server's moderators', not one member's: its posts speak the server's
    preferred locale (`guild_locale`), whoever's action they report."""

    def __init__(
        self,
        channel: Callable[[int], discord.abc.Messageable],
        moderation: Moderation,
        *,
        guild_locale: Callable[[int | None], str | None] = lambda guild_id: None,
    ) -> None:
        self._channel = channel  # the bot's get_partial_messageable
        self._moderation = moderation
        self._guild_locale = guild_locale

    async def generation(self, job: Job, link: str | None) -> None:
        channel_id = await self._moderation.audit_channel(job.guild_id)
        if channel_id is None:  # most servers: no embed is built for nobody
            return
        with use_locale(self._guild_locale(job.guild_id)):
            embed = messages.audit_generation_embed(job, link)
        await self._post(channel_id, embed)

    async def post(self, event: AuditEvent) -> None:
        channel_id = await self._moderation.audit_channel(event.guild_id)
        if channel_id is None:
            return
        with use_locale(self._guild_locale(event.guild_id)):
            title = server_messages.audit_title(event.kind)
            detail = server_messages.audit_detail(event)
            embed = messages.audit_event_embed(title, event.member_id, detail, event.actor_id)
        await self._post(channel_id, embed)

    async def _post(self, channel_id: int, embed: discord.Embed) -> None:
        # Best effort: a missing channel or permission must never fail a member's request.
        try:
            channel = self._channel(channel_id)
            await channel.send(embed=embed, allowed_mentions=NO_PINGS)
        except discord.HTTPException as error:
            log.warning("could not post to the audit channel %s: %s", channel_id, error.status)
        except (OSError, aiohttp.ClientError, TimeoutError) as error:
            # A dropped connection is no reason to fail what the post reports on.
            log.warning("could not post to the audit channel %s: %r", channel_id, error)
