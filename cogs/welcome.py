"""The one welcome post when the bot joins a server.

discord.py fires `on_guild_join` only for a server that was not in READY, but a server added
while the bot was down, or a kick and re-invite, would fire it again after a restart or later:
the welcome is remembered per server in the database, so it is posted at most once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.i18n import use_locale
from bot.ui import messages
from bot.ui.locale import guild_locale
from bot.ui.reply import NO_PINGS

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

log = logging.getLogger(__name__)


def welcomed_key(guild_id: int) -> str:
    return f"welcomed:{guild_id}"


class WelcomeCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        if await self.bot.admission.gate(guild.id) is not None:
            return  # not enabled there: a welcome would invite commands that are refused
        channel = guild.system_channel
        if channel is None:
            return
        allowed = channel.permissions_for(guild.me)
        if not (allowed.view_channel and allowed.send_messages):
            return  # the text needs no embed, so no Embed Links
        meta = self.bot.storage.meta
        if await meta.get(welcomed_key(guild.id)) is not None:
            return
        # Remembered before posting: a crash in between loses one welcome, never doubles it.
        await meta.set(welcomed_key(guild.id), "1")
        try:
            # The whole server reads it: its preferred locale, not any one member's.
            with use_locale(guild_locale(guild)):
                text = messages.welcome_text()
            await channel.send(text, allowed_mentions=NO_PINGS)
        except discord.HTTPException as error:
            log.info("could not post the welcome in server %s (%s)", guild.id, error.status)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(WelcomeCog(bot))
