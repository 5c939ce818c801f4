"""Small helpers every cog uses to answer an interaction the same way."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import mimetypes
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str

from bot.admission import Refusal
from bot.domain import MODELS, ReplyTarget
from bot.i18n import N_, _
from bot.kie import REFERENCE_MAX_BYTES, REFERENCE_TYPES
from bot.ui import messages
from bot.ui.reply import NO_PINGS

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot


log = logging.getLogger(__name__)
PARENT_LOOKUP_SECONDS = 3.0
# Every name and description of a command is a `locale_str`: Discord shows it in the member's
# language from the catalogues (`bot/ui/locale.py`'s translator); the plain text is English.
# kie.ai's Flux-2 models, named as members type them (`/imagine model:pro`, `/server model`):
# product names, the same in every language.
MODEL_CHOICES = [app_commands.Choice(name=model, value=model) for model in MODELS]
# The resolutions, as `/imagine` and `/settings` both offer them.
RESOLUTION_CHOICES = [
    app_commands.Choice(name=locale_str("1K (standard)"), value="1K"),
    app_commands.Choice(name=locale_str("2K (sharper, costs more)"), value="2K"),
]


def let_go(interaction: discord.Interaction[ImagineBot]) -> None:
    """Call as a command returns, answered: discord.py's interaction and the response object
    it caches point at each other, so without this each finished command (its member, user,
    channel and options: about fifteen objects) is garbage that only a full collection frees.
    After a burst of 3,000 commands that made the full collection ~25 ms longer."""
    with contextlib.suppress(AttributeError):  # no response was asked for
        delattr(interaction, "_cs_response")


async def private(interaction: discord.Interaction[ImagineBot], text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def refuse_after_defer(interaction: discord.Interaction[ImagineBot], text: str) -> None:
    """The public "thinking…" reply goes away; the refusal is shown to the requester only."""
    try:
        await interaction.delete_original_response()
    except discord.HTTPException:
        # Cannot remove it: say it there instead (no pings, like every message).
        await interaction.edit_original_response(content=text, allowed_mentions=NO_PINGS)
        return
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


def reply_target(interaction: discord.Interaction[ImagineBot]) -> ReplyTarget:
    return ReplyTarget(
        application_id=interaction.application_id,
        token=interaction.token,
        created_at=interaction.created_at.timestamp(),
        attachment_limit=interaction.filesize_limit,
    )


def role_ids(interaction: discord.Interaction[ImagineBot]) -> tuple[int, ...]:
    return member_role_ids(interaction.user, interaction.guild_id)


def member_role_ids(user: discord.User | discord.Member, guild_id: int | None) -> tuple[int, ...]:
    """The member's roles (for role quotas), @everyone included: its id is the server's, and a
    quota set on it applies to every member. None for a plain User, as in direct messages."""
    roles = getattr(user, "roles", [])
    own = tuple(role.id for role in roles if not role.is_default())
    return own if guild_id is None else (*own, guild_id)


async def followup(interaction: discord.Interaction[ImagineBot], text: str) -> None:
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def is_server_manager(interaction: discord.Interaction[ImagineBot]) -> bool:
    """The admin cogs' check. Discord hides their commands from others by default, but
    server admins can change who sees them, so the bot checks Manage Server again."""
    if interaction.guild_id is None or not interaction.permissions.manage_guild:
        await private(interaction, messages.managers_only())
        return False
    return True


def guild_and_actor(interaction: discord.Interaction[ImagineBot]) -> tuple[int, int]:
    """For admin commands, which are server-only: the server and the admin acting."""
    assert interaction.guild_id is not None
    return interaction.guild_id, interaction.user.id


class InteractionRequester:
    """The `Requester` of `Generation.request` for one interaction (a command or a button):
    answers the member the way every image request is answered."""

    def __init__(
        self, interaction: discord.Interaction[ImagineBot], *, private: bool = False
    ) -> None:
        self._interaction = interaction
        self._private = private  # the member's results are for them alone (/settings)

    async def acknowledge(self, sent: Callable[[], None] | None = None) -> None:
        """The "thinking…" reply, which becomes the job's reply: public, or shown to the
        member alone when their results are private (every edit of it stays so)."""
        if not self._interaction.response.is_done():
            await self._interaction.client.deferrals.defer(
                self._interaction, ephemeral=self._private, sent=sent
            )

    async def refuse(self, refusal: Refusal) -> None:
        """Privately, and as the first answer where possible, so nothing public appears."""
        text = messages.refusal_text(refusal)
        if self._interaction.response.is_done():
            await refuse_after_defer(self._interaction, text)
        else:
            await private(self._interaction, text)

    async def age_restricted(self) -> bool:
        return await age_restricted(self._interaction)


class ReferenceFault(enum.Enum):
    # Each value is its text for the member, translated where it is shown (`problem`).
    NOT_AN_IMAGE = N_("not a JPEG, PNG or WebP")
    TOO_LARGE = N_("over 10 MB")

    @property
    def problem(self) -> str:
        return _(self.value)


def reference_fault(content_type: str | None, filename: str, size: int) -> ReferenceFault | None:
    """Why an attachment cannot be a reference image, from what Discord says of it."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if not kind:  # Discord leaves it out for some uploads: go by the name
        kind = mimetypes.guess_type(filename)[0] or ""
    if kind not in REFERENCE_TYPES:
        return ReferenceFault.NOT_AN_IMAGE
    if size > REFERENCE_MAX_BYTES:
        return ReferenceFault.TOO_LARGE
    return None


def reference_problem(content_type: str | None, filename: str, size: int) -> str | None:
    """What is wrong with a reference image, in words for the member; None when all is well."""
    fault = reference_fault(content_type, filename, size)
    if fault is ReferenceFault.NOT_AN_IMAGE:
        return messages.reference_not_image(filename)
    if fault is ReferenceFault.TOO_LARGE:
        return messages.reference_too_large(size, REFERENCE_MAX_BYTES)
    return None


async def age_restricted(interaction: discord.Interaction[ImagineBot]) -> bool:
    """Whether the interaction's channel is marked age-restricted (a thread: its parent)."""
    channel = interaction.channel
    if interaction.guild_id is None or channel is None:
        return False
    if isinstance(channel, discord.Thread):
        parent: object = channel.parent
        if parent is None and channel.parent_id:
            try:
                async with asyncio.timeout(PARENT_LOOKUP_SECONDS):
                    parent = await interaction.client.fetch_channel(channel.parent_id)
            except (discord.HTTPException, TimeoutError):
                log.info("could not look up the parent of thread %s", channel.id)
                return False  # unknown counts as not age-restricted: the filter stays on
        channel_or_parent: object = parent
    else:
        channel_or_parent = channel
    is_nsfw = getattr(channel_or_parent, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False
