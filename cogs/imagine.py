"""/imagine: turn a prompt (and maybe a reference image) into an image.

Options and checks live here, and the start shared with the result buttons; the lifecycle is
`JobService`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import mimetypes
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import Asker
from bot.domain import OverLimit
from bot.jobs import JobRequest
from bot.kie import (
    ASPECT_RATIOS,
    AUTO_ASPECT_RATIO,
    PROMPT_MAX_LENGTH,
    PROMPT_MIN_LENGTH,
    REFERENCE_MAX_BYTES,
    REFERENCE_TYPES,
    ImageRequest,
)
from bot.ui import messages
from cogs.common import age_restricted, private, refuse, reply_target, role_ids

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
        await start_generation(self.bot, interaction, request)


def _option_problem(
    prompt: str, aspect_ratio: str, resolution: str, image: discord.Attachment | None
) -> str | None:
    """What is wrong with the options, in words for the member; None when all is well."""
    if not PROMPT_MIN_LENGTH <= len(prompt) <= PROMPT_MAX_LENGTH:
        return messages.prompt_length_error(len(prompt))
    if aspect_ratio not in (*ASPECT_RATIOS, AUTO_ASPECT_RATIO) or resolution not in ("1K", "2K"):
        return "That option is not one the bot offers. Nothing was spent."
    if aspect_ratio == AUTO_ASPECT_RATIO and image is None:
        return messages.auto_needs_image()
    if image is not None:
        return reference_problem(image.content_type, image.filename, image.size)
    return None


def reference_problem(content_type: str | None, filename: str, size: int) -> str | None:
    kind = (content_type or "").split(";")[0].strip().lower()
    if not kind:  # Discord leaves it out for some uploads: go by the name
        kind = mimetypes.guess_type(filename)[0] or ""
    if kind not in REFERENCE_TYPES:
        return messages.reference_not_image(filename)
    if size > REFERENCE_MAX_BYTES:
        return messages.reference_too_large(size, REFERENCE_MAX_BYTES)
    return None


async def start_generation(
    bot: ImagineBot, interaction: discord.Interaction[ImagineBot], request: JobRequest
) -> None:
    """Admit, charge and start: shared by /imagine and the Re-roll and Vary buttons.

    A refusal is the interaction's first, private answer. An admitted request gets a public
    "thinking…" reply that becomes the job's reply.
    """
    if not bot.accepting_jobs:
        await private(interaction, messages.shutting_down())
        return
    asker = Asker(
        user_id=request.user_id,
        guild_id=request.guild_id,
        channel_id=request.channel_id,
        role_ids=request.role_ids,
        prompt=request.image.prompt,
        units=bot.quota.costs.units(request.image.resolution),
    )
    checking = asyncio.ensure_future(bot.admission.check(asker))
    done, _ = await asyncio.wait({checking}, timeout=bot.admission.answer_within)
    if not done:
        # The checks are indexed reads, but a busy database must not cost Discord's 3 s.
        log.warning("admission checks are slow; answering publicly first")
        await interaction.response.defer(thinking=True)
    refusal = await checking
    if refusal is not None:
        await refuse(interaction, asker, refusal)
        return
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)
    request = dataclasses.replace(request, age_restricted=await age_restricted(interaction))
    job = await bot.jobs.reserve(request)
    if isinstance(job, OverLimit):  # someone else's charge got there first
        await refuse(interaction, asker, await bot.admission.over_limit(asker, job))
        return
    bot.start_job(job)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))
