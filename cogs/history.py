"""/history: a member's latest generations in this server, privately."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.ui import messages
from bot.ui.reply import NO_PINGS

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

HISTORY_LENGTH = 10


class HistoryCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="history", description="See your latest images and their links.")
    async def history(self, interaction: discord.Interaction[ImagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        jobs = await self.bot.storage.jobs.recent_jobs(
            interaction.user.id, interaction.guild_id, HISTORY_LENGTH
        )
        await interaction.followup.send(
            embed=messages.history_embed(jobs), ephemeral=True, allowed_mentions=NO_PINGS
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(HistoryCog(bot))
