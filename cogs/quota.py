"""/quota: how much of today's quota the member has used, and when it resets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.ui import messages
from bot.ui.reply import NO_PINGS
from cogs.common import role_ids

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot


class QuotaCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(
        name=locale_str("quota"),
        description=locale_str("See how many images you can still make today."),
    )
    async def quota(self, interaction: discord.Interaction[ImagineBot]) -> None:
        # Defer first: the database read must not eat into Discord's 3-second window.
        await interaction.response.defer(ephemeral=True, thinking=True)
        book = self.bot.quota
        status = await book.member_status(
            interaction.user.id, interaction.guild_id, role_ids(interaction)
        )
        budget = await book.budget_status(interaction.guild_id)
        text = messages.quota_summary(status, book.costs, budget)
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(QuotaCog(bot))
