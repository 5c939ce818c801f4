"""Small helpers every cog uses to answer an interaction the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bot.delivery import NO_PINGS
from bot.store import ReplyTarget

if TYPE_CHECKING:
    from bot.client import ImagineBot


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
    return member_role_ids(interaction.user)


def member_role_ids(user: discord.User | discord.Member) -> tuple[int, ...]:
    """The member's roles (for role quotas); none for a plain User, as in direct messages."""
    roles = getattr(user, "roles", [])
    return tuple(role.id for role in roles if not role.is_default())


async def followup(interaction: discord.Interaction[ImagineBot], text: str) -> None:
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def is_server_manager(interaction: discord.Interaction[ImagineBot]) -> bool:
    """The admin cogs' check. Discord hides their commands from others by default, but
    server admins can change who sees them, so the bot checks Manage Server again."""
    if interaction.guild_id is None or not interaction.permissions.manage_guild:
        await private(interaction, "Only members who can manage this server can do that.")
        return False
    return True


def guild_and_actor(interaction: discord.Interaction[ImagineBot]) -> tuple[int, int]:
    """For admin commands, which are server-only: the server and the admin acting."""
    assert interaction.guild_id is not None
    return interaction.guild_id, interaction.user.id
