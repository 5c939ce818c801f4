"""Servers the bot joins and leaves, told to the core (`bot.departures`).

discord.py fires `on_guild_remove` only for a GUILD_DELETE without `unavailable` (the bot was
removed; an outage fires `on_guild_unavailable`), and `on_guild_join` for a server that was not
in READY. `on_ready` comes once the servers READY listed have arrived, or stayed unavailable:
`bot.guilds` then holds every one of them, which is what the bot is still in (on every shard of
this process: the auto-sharded client fires it once all of them are ready). A process running
only some shards (SHARD_IDS) says nothing about servers on the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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
        await self.bot.departures.reconcile(
            (guild.id for guild in self.bot.guilds), ours=on_shards(self.bot)
        )

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.bot.departures.returned(guild.id)

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        await self.bot.departures.left(guild.id)


def on_shards(bot: ImagineBot) -> Callable[[int], bool]:
    """Whether a server is on a shard this process runs (Discord's rule: the server id's
    timestamp bits modulo the shard count)."""
    count, ids = bot.settings.shard_count, bot.settings.shard_ids
    if count is None or ids is None:
        return lambda _guild_id: True
    mine = frozenset(ids)
    return lambda guild_id: (guild_id >> 22) % count in mine


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(DeparturesCog(bot))
