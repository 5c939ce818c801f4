"""/moderation: a server's blocked terms, banned members and audit-log channel.

Only in a server, and by default only for members who can manage it (Discord hides the commands
from others; the bot checks again, since server admins can change who sees them). Every answer
is private and shows the change back; every change is recorded in the moderation log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.moderation import ModerationError
from bot.ui import messages
from cogs.common import followup, guild_and_actor, is_server_manager

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class ModerationCog(
    commands.GroupCog,
    group_name="moderation",
    group_description="Blocked terms, banned members and the audit log for this server.",
):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[ImagineBot]) -> bool:  # type: ignore[override]
        return await is_server_manager(interaction)

    @app_commands.command(name="block", description="Block a word or phrase in prompts.")
    @app_commands.describe(term="The word or phrase; other spellings of it are caught too.")
    async def block(
        self, interaction: discord.Interaction[ImagineBot], term: app_commands.Range[str, 2, 100]
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            added = await self.bot.moderation.add_term(guild_id, term, actor)
        except ModerationError as error:
            await followup(interaction, str(error))
            return
        count = len(await self.bot.moderation.terms(guild_id))
        shown = messages.safe_prompt(term, 100)
        if added:
            await self.bot.audit.event(guild_id, "🚫 Term blocked", actor, term, actor)
            await followup(interaction, f"Blocked **{shown}**. This server blocks {count} terms.")
        else:
            await followup(interaction, f"**{shown}** was already blocked. Nothing changed.")

    @app_commands.command(name="unblock", description="Allow a blocked word or phrase again.")
    @app_commands.describe(term="The blocked word or phrase, in any spelling.")
    async def unblock(
        self, interaction: discord.Interaction[ImagineBot], term: app_commands.Range[str, 2, 100]
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            removed = await self.bot.moderation.remove_term(guild_id, term, actor)
        except ModerationError as error:
            await followup(interaction, str(error))
            return
        shown = messages.safe_prompt(term, 100)
        if removed:
            await self.bot.audit.event(guild_id, "✅ Term unblocked", actor, term, actor)
            await followup(interaction, f"**{shown}** is allowed again.")
        else:
            await followup(interaction, f"**{shown}** was not blocked. Nothing changed.")

    @app_commands.command(name="blocklist", description="Show this server's blocked terms.")
    async def blocklist(self, interaction: discord.Interaction[ImagineBot]) -> None:
        guild_id, _ = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        terms = await self.bot.moderation.terms(guild_id)
        if not terms:
            await followup(interaction, "This server blocks no terms.")
            return
        listed = ", ".join(f"`{messages.safe_prompt(t, 100)}`" for t in terms)
        await followup(interaction, f"Blocked terms ({len(terms)}): {listed}"[:1900])

    @app_commands.command(name="ban", description="Stop a member from using the image bot here.")
    @app_commands.describe(member="Who to ban from the bot.", reason="Why (kept in the log).")
    async def ban(
        self,
        interaction: discord.Interaction[ImagineBot],
        member: discord.User,
        reason: app_commands.Range[str, 1, 300] | None = None,
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            banned = await self.bot.moderation.ban(guild_id, member.id, actor, reason)
        except ModerationError as error:
            await followup(interaction, str(error))
            return
        if banned:
            await self.bot.audit.event(guild_id, "⛔ Member banned", member.id, reason or "", actor)
            await followup(interaction, f"<@{member.id}> can no longer use the bot here.")
        else:
            await followup(interaction, f"<@{member.id}> was already banned. Nothing changed.")

    @app_commands.command(name="unban", description="Let a banned member use the bot again.")
    @app_commands.describe(member="Who to unban.")
    async def unban(
        self, interaction: discord.Interaction[ImagineBot], member: discord.User
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        if await self.bot.moderation.unban(guild_id, member.id, actor):
            await self.bot.audit.event(guild_id, "✅ Member unbanned", member.id, "", actor)
            await followup(interaction, f"<@{member.id}> can use the bot again.")
        else:
            await followup(interaction, f"<@{member.id}> was not banned. Nothing changed.")

    @app_commands.command(
        name="audit-channel", description="Where the bot logs generations and moderation."
    )
    @app_commands.describe(channel="The log channel; leave empty to stop logging.")
    async def audit_channel(
        self,
        interaction: discord.Interaction[ImagineBot],
        channel: discord.TextChannel | None = None,
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.moderation.set_audit_channel(
            guild_id, channel.id if channel else None, actor
        )
        if channel is None:
            await followup(interaction, "The audit log is off.")
        else:
            await followup(
                interaction, f"Generations and moderation events now go to <#{channel.id}>."
            )

    @app_commands.command(name="allow-channel", description="Let /imagine be used in a channel.")
    @app_commands.describe(channel="Once any channel is listed, /imagine works only in those.")
    async def allow_channel(
        self, interaction: discord.Interaction[ImagineBot], channel: discord.TextChannel
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.moderation.allow_channel(guild_id, channel.id, actor)
        await followup(interaction, await self._where_imagine_works(guild_id))

    @app_commands.command(name="disallow-channel", description="Take a channel off the list.")
    @app_commands.describe(channel="With no channel listed, /imagine works everywhere.")
    async def disallow_channel(
        self, interaction: discord.Interaction[ImagineBot], channel: discord.TextChannel
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.moderation.disallow_channel(guild_id, channel.id, actor)
        await followup(interaction, await self._where_imagine_works(guild_id))

    async def _where_imagine_works(self, guild_id: int) -> str:
        listed = await self.bot.moderation.allowed_channels(guild_id)
        if not listed:
            return "`/imagine` works in every channel again."
        return f"`/imagine` now works only in {', '.join(f'<#{c}>' for c in listed)}."


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ModerationCog(bot))
