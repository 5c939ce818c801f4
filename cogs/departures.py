"""Servers the bot joins and leaves, told to the core (`bot.departures`).

discord.py fires `on_guild_remove` only for a GUILD_DELETE without `unavailable` (the bot was
removed; an outage fires `on_guild_unavailable`), and `on_guild_join` for a server that was not
in READY. `on_ready` comes once the servers READY listed have arrived, or stayed unavailable:
`bot.guilds` then holds every one of them, which is what the bot is still in (it runs one
shard, so one READY lists every server; a sharded bot would need every shard's).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

log = logging.getLogger(__name__)


class DeparturesCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        await self.bot.departures.reconcile(guild.id for guild in self.bot.guilds)

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.bot.departures.returned(guild.id)

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        await self.bot.departures.left(guild.id)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(DeparturesCog(bot))
