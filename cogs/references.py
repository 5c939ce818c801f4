"""The "Use as reference" message command: a message's images into the member's reference tray.

Translates only: the attachments Discord resolved for the message are checked as the `image`
option is, and `ReferenceTray` keeps them; the answer is private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.domain import TrayImage
from bot.ui import reference_messages
from cogs.common import private, reference_fault

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

# A message command's name may have spaces and capitals, in every language.
USE_AS_REFERENCE = locale_str("Use as reference")


class ReferencesCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name=USE_AS_REFERENCE, callback=self.use_as_reference)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def use_as_reference(
        self, interaction: discord.Interaction[ImagineBot], message: discord.Message
    ) -> None:
        # Attachments only: an embed's image says neither its type nor its size, and may be
        # anyone's link; the bot's own results have the Vary button instead.
        usable: list[TrayImage] = []
        skipped: list[str] = []
        for file in message.attachments:
            fault = reference_fault(file.content_type, file.filename, file.size)
            if fault is None:
                usable.append(TrayImage(key=str(file.id), url=file.url, filename=file.filename))
            else:
                skipped.append(reference_messages.skipped_attachment(file.filename, fault.problem))
        if not usable:
            await private(interaction, reference_messages.nothing_to_add(skipped))
            return
        tray = self.bot.tray
        result = await tray.add(interaction.user.id, interaction.guild_id, usable)
        oldest = tray.expires_at(result.tray[0]) if result.tray else 0.0
        await private(
            interaction, reference_messages.tray_added(result, skipped, tray.capacity, oldest)
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ReferencesCog(bot))
