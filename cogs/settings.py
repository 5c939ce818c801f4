"""/settings: a member's own defaults for /imagine in this server (or in DMs), privately.

With no option it shows them; each option given is saved (the others are kept); `reset` forgets
them all first. They are applied by `/imagine` and the result buttons, where typed options win.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.domain import MAX_COUNT, parse_aspect_ratio, parse_model, parse_resolution
from bot.kie import ASPECT_RATIOS
from bot.ui import messages
from bot.ui.reply import NO_PINGS
from cogs.common import MODEL_CHOICES, RESOLUTION_CHOICES
from cogs.common import private as answer_privately

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot


class SettingsCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(
        name=locale_str("settings"), description=locale_str("Your own defaults for /imagine here.")
    )
    @app_commands.rename(
        aspect_ratio=locale_str("aspect_ratio"),
        resolution=locale_str("resolution"),
        private=locale_str("private"),
        model=locale_str("model"),
        count=locale_str("count"),
        reset=locale_str("reset"),
    )
    @app_commands.describe(
        aspect_ratio=locale_str("Your usual shape when you type none."),
        resolution=locale_str("Your usual resolution when you type none (2K costs more)."),
        private=locale_str("Show your images to you alone (True) or in the channel (False)."),
        model=locale_str(
            "Your usual model when you type none: flex or pro (see /quota for costs)."
        ),
        count=locale_str("How many images you usually ask for at once (1-4), each charged."),
        reset=locale_str("Forget your defaults here and use the bot's."),
    )
    @app_commands.choices(
        aspect_ratio=[app_commands.Choice(name=r, value=r) for r in ASPECT_RATIOS],
        resolution=RESOLUTION_CHOICES,
        model=MODEL_CHOICES,
    )
    async def settings(
        self,
        interaction: discord.Interaction[ImagineBot],
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        private: bool | None = None,
        model: str | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
        reset: bool = False,
    ) -> None:
        try:
            ratio = parse_aspect_ratio(aspect_ratio) if aspect_ratio is not None else None
            size = parse_resolution(resolution) if resolution is not None else None
            chosen_model = parse_model(model) if model is not None else None
        except ValueError:  # Discord offers only the choices; a forged interaction may not
            await answer_privately(interaction, messages.option_not_offered())
            return
        if ratio == "auto" or (count is not None and not 1 <= count <= MAX_COUNT):
            await answer_privately(interaction, messages.option_not_offered())
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        store = self.bot.storage.members
        user_id, guild_id = interaction.user.id, interaction.guild_id
        changed: str | None = None
        if reset:
            await store.clear_defaults(user_id, guild_id)
            changed = "reset"
        defaults = await store.defaults(user_id, guild_id)
        given = {
            "aspect_ratio": ratio,
            "resolution": size,
            "private": private,
            "model": chosen_model,
            "count": count,
        }
        chosen = {name: value for name, value in given.items() if value is not None}
        if chosen:
            defaults = dataclasses.replace(defaults, **chosen)  # type: ignore[arg-type]
            await store.set_defaults(user_id, guild_id, defaults)
            changed = "saved"
        server_model = await self.bot.quota.default_model(guild_id)
        text = messages.member_defaults_text(
            defaults, self.bot.quota.costs, server_model, changed=changed
        )
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(SettingsCog(bot))
