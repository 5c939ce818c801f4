"""/imagine: turn a prompt into an image. Options and checks here; the lifecycle is `JobService`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import messages
from bot.delivery import NO_PINGS
from bot.jobs import JobRequest
from bot.kie import ASPECT_RATIOS, PROMPT_MAX_LENGTH, PROMPT_MIN_LENGTH, ImageRequest
from bot.moderation import RefusalKind
from bot.store import ReplyTarget

if TYPE_CHECKING:
    from bot.client import ImagineBot

log = logging.getLogger(__name__)

_RATIO_NAMES = {
    "1:1": "1:1 square",
    "4:3": "4:3 landscape",
    "3:4": "3:4 portrait",
    "16:9": "16:9 widescreen",
    "9:16": "9:16 tall (phone)",
    "3:2": "3:2 photo landscape",
    "2:3": "2:3 photo portrait",
}
ASPECT_RATIO_CHOICES = [app_commands.Choice(name=_RATIO_NAMES[r], value=r) for r in ASPECT_RATIOS]


class ImagineCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Turn a prompt into an image (Flux-2).")
    @app_commands.describe(
        prompt="What to draw, in your own words (3 to 5000 characters).",
        aspect_ratio="The shape of the image. Default: 1:1 square.",
        resolution="1K (default) or 2K, sharper but costs more of your daily quota (see /quota).",
    )
    @app_commands.choices(
        aspect_ratio=ASPECT_RATIO_CHOICES,
        resolution=[
            app_commands.Choice(name="1K (standard)", value="1K"),
            app_commands.Choice(name="2K (sharper, costs more)", value="2K"),
        ],
    )
    async def imagine(
        self,
        interaction: discord.Interaction[ImagineBot],
        prompt: app_commands.Range[str, PROMPT_MIN_LENGTH, PROMPT_MAX_LENGTH],
        aspect_ratio: str = "1:1",
        resolution: str = "1K",
    ) -> None:
        # Checks that need no I/O answer at once; Discord allows 3 s before the first response.
        prompt = prompt.strip()
        if not PROMPT_MIN_LENGTH <= len(prompt) <= PROMPT_MAX_LENGTH:
            await _private(interaction, messages.prompt_length_error(len(prompt)))
            return
        if aspect_ratio not in ASPECT_RATIOS or resolution not in ("1K", "2K"):
            await _private(interaction, "That option is not one the bot offers. Nothing was spent.")
            return
        if not self.bot.accepting_jobs:
            await _private(interaction, messages.shutting_down())
            return

        await interaction.response.defer(thinking=True)
        refusal = await self.bot.moderation.check(
            interaction.guild_id, interaction.channel_id, interaction.user.id, prompt
        )
        if refusal is not None:
            await _refuse_after_defer(interaction, messages.moderation_refusal(refusal))
            if refusal.kind is RefusalKind.WRONG_CHANNEL:
                return  # a wrong channel is a mistake, not a moderation event
            title = "🚫 Prompt refused" if refusal.term else "⛔ Banned member refused"
            detail = f"{refusal.term}: {prompt}" if refusal.term else prompt
            await self.bot.audit.event(
                interaction.guild_id, title, interaction.user.id, detail, None
            )
            return
        request = JobRequest(
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            image=ImageRequest(prompt, aspect_ratio, resolution),  # type: ignore[arg-type]
            reply=ReplyTarget(
                application_id=interaction.application_id,
                token=interaction.token,
                created_at=interaction.created_at.timestamp(),
                attachment_limit=interaction.filesize_limit,
            ),
        )
        job = await self.bot.jobs.reserve(request)
        if job is None:
            status = await self.bot.quota.status(interaction.user.id)
            cost = self.bot.quota.costs.units(request.image.resolution)
            await _refuse_after_defer(interaction, messages.quota_exceeded(status, cost))
            return
        self.bot.start_job(job)


async def _private(interaction: discord.Interaction[ImagineBot], text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def _refuse_after_defer(interaction: discord.Interaction[ImagineBot], text: str) -> None:
    """The public "thinking…" reply goes away; the refusal is shown to the requester only."""
    try:
        await interaction.delete_original_response()
    except discord.HTTPException:
        # Cannot remove it: say it there instead (no pings, like every message).
        await interaction.edit_original_response(content=text, allowed_mentions=NO_PINGS)
        return
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))
