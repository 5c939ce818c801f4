"""/help, privately: what the bot does and costs here, and a set-up checklist for managers.

Every figure comes from the live configuration (the cost settings, the member's own limit and
the server's budget), so the text never disagrees with what `/imagine` will charge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.ui import messages, server_messages
from bot.ui.reply import NO_PINGS
from cogs.common import role_ids

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot


class HelpCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(
        name=locale_str("help"), description=locale_str("What this bot does, what it costs here.")
    )
    async def help(self, interaction: discord.Interaction[ImagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        book = self.bot.quota
        guild_id = interaction.guild_id
        status = await book.member_status(interaction.user.id, guild_id, role_ids(interaction))
        budget = await book.budget_status(guild_id)
        embed = messages.help_embed(status, book.costs, budget, in_dm=guild_id is None)
        if guild_id is not None and interaction.permissions.manage_guild:
            view = await self.bot.admin.view(guild_id, await self.bot.jobs.run_limits(guild_id))
            embed.add_field(
                name=server_messages.setup_checklist_title(),
                value=server_messages.setup_checklist(view),
                inline=False,
            )
        await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(HelpCog(bot))
