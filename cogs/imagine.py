"""/imagine: turn a prompt (and maybe a reference image) into an image.

The options are checked here; admitting, charging and starting the job is `Generation`'s (the
same entry the result buttons use), and the job's life is `JobService`'s.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs import JobRequest
from bot.kie import (
    ASPECT_RATIOS,
    AUTO_ASPECT_RATIO,
    PROMPT_MAX_LENGTH,
    PROMPT_MIN_LENGTH,
    ImageRequest,
)
from bot.ui import messages
from cogs.common import InteractionRequester, private, reference_problem, reply_target, role_ids

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

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
ASPECT_RATIO_CHOICES = [
    *(app_commands.Choice(name=_RATIO_NAMES[r], value=r) for r in ASPECT_RATIOS),
    app_commands.Choice(name="auto (match the reference image)", value=AUTO_ASPECT_RATIO),
]


class ImagineCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Turn a prompt into an image (Flux-2).")
    @app_commands.describe(
        prompt="What to draw, in your own words (3 to 5000 characters).",
        aspect_ratio="The shape of the image. Default: 1:1, or auto with a reference image.",
        resolution="1K (default) or 2K, sharper but costs more of your daily quota (see /quota).",
        image="A reference image to start from (JPEG, PNG or WebP, up to 10 MB).",
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
        aspect_ratio: str | None = None,
        resolution: str = "1K",
        image: discord.Attachment | None = None,
    ) -> None:
        # Checks that need no I/O answer at once; Discord allows 3 s before the first response.
        prompt = prompt.strip()
        if aspect_ratio is None:
            aspect_ratio = AUTO_ASPECT_RATIO if image is not None else "1:1"
        problem = _option_problem(prompt, aspect_ratio, resolution, image)
        if problem is not None:
            await private(interaction, problem)
            return
        request = JobRequest(
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            image=ImageRequest(prompt, aspect_ratio, resolution),  # type: ignore[arg-type]
            reply=reply_target(interaction),
            role_ids=role_ids(interaction),
            reference_url=image.url if image is not None else None,
        )
        await self.bot.generation.request(request, InteractionRequester(interaction))


def _option_problem(
    prompt: str, aspect_ratio: str, resolution: str, image: discord.Attachment | None
) -> str | None:
    """What is wrong with the options, in words for the member; None when all is well."""
    if not PROMPT_MIN_LENGTH <= len(prompt) <= PROMPT_MAX_LENGTH:
        return messages.prompt_length_error(len(prompt))
    if aspect_ratio not in (*ASPECT_RATIOS, AUTO_ASPECT_RATIO) or resolution not in ("1K", "2K"):
        return messages.option_not_offered()
    if aspect_ratio == AUTO_ASPECT_RATIO and image is None:
        return messages.auto_needs_image()
    if image is not None:
        return reference_problem(image.content_type, image.filename, image.size)
    return None


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))
