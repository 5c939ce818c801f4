"""/moderation: a server's blocked terms, banned members and audit-log channel.

Only in a server, and by default only for members who can manage it (Discord hides the commands
from others; the bot checks again, since server admins can change who sees them). Every answer
is private and shows the change back; every change is stored and posted to the audit channel by
`AdminEvents`, and a change the rules refuse is answered by the bot's one error handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.ui import server_messages as texts
from cogs.common import followup, guild_and_actor, is_server_manager

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class ModerationCog(
    commands.GroupCog,
    group_name=locale_str("moderation"),
    group_description=locale_str(
        "Blocked terms, banned members and the audit log for this server."
    ),
):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[ImagineBot]) -> bool:  # type: ignore[override]
        return await is_server_manager(interaction)

    @app_commands.command(
        name=locale_str("block"), description=locale_str("Block a word or phrase in prompts.")
    )
    @app_commands.rename(term=locale_str("term"))
    @app_commands.describe(
        term=locale_str("The word or phrase; other spellings of it are caught too.")
    )
    async def block(
        self, interaction: discord.Interaction[ImagineBot], term: app_commands.Range[str, 2, 100]
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        added = await self.bot.admin_events.block_term(guild_id, term, actor)
        count = len(await self.bot.moderation.terms(guild_id))
        await followup(interaction, texts.term_blocked(term, count, added))

    @app_commands.command(
        name=locale_str("unblock"), description=locale_str("Allow a blocked word or phrase again.")
    )
    @app_commands.rename(term=locale_str("term"))
    @app_commands.describe(term=locale_str("The blocked word or phrase, in any spelling."))
    async def unblock(
        self, interaction: discord.Interaction[ImagineBot], term: app_commands.Range[str, 2, 100]
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        removed = await self.bot.admin_events.unblock_term(guild_id, term, actor)
        await followup(interaction, texts.term_unblocked(term, removed))

    @app_commands.command(
        name=locale_str("blocklist"), description=locale_str("Show this server's blocked terms.")
    )
    async def blocklist(self, interaction: discord.Interaction[ImagineBot]) -> None:
        guild_id, _ = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        terms = await self.bot.moderation.terms(guild_id)
        await followup(interaction, texts.blocked_terms(terms))

    @app_commands.command(
        name=locale_str("ban"),
        description=locale_str("Stop a member from using the image bot here."),
    )
    @app_commands.rename(member=locale_str("member"), reason=locale_str("reason"))
    @app_commands.describe(
        member=locale_str("Who to ban from the bot."), reason=locale_str("Why (kept in the log).")
    )
    async def ban(
        self,
        interaction: discord.Interaction[ImagineBot],
        member: discord.User,
        reason: app_commands.Range[str, 1, 300] | None = None,
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        banned = await self.bot.admin_events.ban(guild_id, member.id, actor, reason)
        await followup(interaction, texts.member_banned(member.id, banned))

    @app_commands.command(
        name=locale_str("unban"), description=locale_str("Let a banned member use the bot again.")
    )
    @app_commands.rename(member=locale_str("member"))
    @app_commands.describe(member=locale_str("Who to unban."))
    async def unban(
        self, interaction: discord.Interaction[ImagineBot], member: discord.User
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        unbanned = await self.bot.admin_events.unban(guild_id, member.id, actor)
        await followup(interaction, texts.member_unbanned(member.id, unbanned))

    @app_commands.command(
        name=locale_str("audit-channel"),
        description=locale_str("Where the bot logs generations and moderation."),
    )
    @app_commands.rename(channel=locale_str("channel"))
    @app_commands.describe(channel=locale_str("The log channel; leave empty to stop logging."))
    async def audit_channel(
        self,
        interaction: discord.Interaction[ImagineBot],
        channel: discord.TextChannel | None = None,
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        channel_id = channel.id if channel else None
        await self.bot.admin_events.set_audit_channel(guild_id, channel_id, actor)
        await followup(interaction, texts.audit_channel_set(channel_id))

    @app_commands.command(
        name=locale_str("allow-channel"),
        description=locale_str("Let /imagine be used in a channel."),
    )
    @app_commands.rename(channel=locale_str("channel"))
    @app_commands.describe(
        channel=locale_str("Once any channel is listed, /imagine works only in those.")
    )
    async def allow_channel(
        self, interaction: discord.Interaction[ImagineBot], channel: discord.TextChannel
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.admin_events.allow_channel(guild_id, channel.id, actor)
        await followup(interaction, await self._where_imagine_works(guild_id))

    @app_commands.command(
        name=locale_str("disallow-channel"), description=locale_str("Take a channel off the list.")
    )
    @app_commands.rename(channel=locale_str("channel"))
    @app_commands.describe(channel=locale_str("With no channel listed, /imagine works everywhere."))
    async def disallow_channel(
        self, interaction: discord.Interaction[ImagineBot], channel: discord.TextChannel
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.admin_events.disallow_channel(guild_id, channel.id, actor)
        await followup(interaction, await self._where_imagine_works(guild_id))

    async def _where_imagine_works(self, guild_id: int) -> str:
        return texts.where_imagine_works(await self.bot.moderation.allowed_channels(guild_id))


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ModerationCog(bot))
