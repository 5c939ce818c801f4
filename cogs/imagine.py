"""/imagine: turn a prompt (and maybe a reference image) into an image.

The options are checked here; admitting, charging and starting the job is `Generation`'s (the
same entry the result buttons use), and the job's life is `JobService`'s.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.domain import parse_aspect_ratio, parse_resolution
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
        aspect_ratio="The shape. Default: yours (/settings) or 1:1; auto with a reference image.",
        resolution="1K or 2K (sharper, costs more; see /quota). Default: yours (/settings) or 1K.",
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
        resolution: str | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        prompt = prompt.strip()
        # The member's own defaults (/settings): one indexed read, well within Discord's 3 s.
        defaults = await self.bot.storage.members.defaults(
            interaction.user.id, interaction.guild_id
        )
        ratio, size = defaults.options(aspect_ratio, resolution, reference=image is not None)
        asked = _image_request(prompt, ratio, size, image)
        if isinstance(asked, str):
            await private(interaction, asked)
            return
        request = JobRequest(
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            image=asked,
            reply=reply_target(interaction),
            role_ids=role_ids(interaction),
            private=defaults.private,
        )
        requester = InteractionRequester(interaction, private=defaults.private)
        await self.bot.generation.request(request, requester)


def _image_request(
    prompt: str, ratio: str, size: str, image: discord.Attachment | None
) -> ImageRequest | str:
    """The options as one request, or what is wrong with them in words for the member."""
    if not PROMPT_MIN_LENGTH <= len(prompt) <= PROMPT_MAX_LENGTH:
        return messages.prompt_length_error(len(prompt))
    try:
        request = ImageRequest(prompt, parse_aspect_ratio(ratio), parse_resolution(size))
    except ValueError:  # Discord offers only the choices; a forged interaction may not
        return messages.option_not_offered()
    if image is None:
        return messages.auto_needs_image() if request.aspect_ratio == AUTO_ASPECT_RATIO else request
    problem = reference_problem(image.content_type, image.filename, image.size)
    return problem or dataclasses.replace(request, reference_urls=(image.url,))


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))
