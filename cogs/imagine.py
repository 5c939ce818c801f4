"""/imagine: turn a prompt (and maybe reference images) into an image.

The options are checked here; admitting, charging and starting the job is `Generation`'s (the
same entry the result buttons use), and the job's life is `JobService`'s. The member's
reference tray (`ReferenceTray`) joins the references, and is emptied once the request is
admitted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.domain import MAX_COUNT, TrayImage, parse_aspect_ratio, parse_model, parse_resolution
from bot.generation import Admitted, Refused
from bot.jobs import JobRequest
from bot.kie import (
    ASPECT_RATIOS,
    AUTO_ASPECT_RATIO,
    PROMPT_MAX_LENGTH,
    PROMPT_MIN_LENGTH,
    ImageRequest,
)
from bot.tray import TooManyReferences, with_tray
from bot.ui import messages, reference_messages
from cogs.common import (
    MODEL_CHOICES,
    RESOLUTION_CHOICES,
    InteractionRequester,
    let_go,
    private,
    reference_problem,
    reply_target,
    role_ids,
)

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

log = logging.getLogger(__name__)


_RATIO_NAMES = {
    "1:1": locale_str("1:1 square"),
    "4:3": locale_str("4:3 landscape"),
    "3:4": locale_str("3:4 portrait"),
    "16:9": locale_str("16:9 widescreen"),
    "9:16": locale_str("9:16 tall (phone)"),
    "3:2": locale_str("3:2 photo landscape"),
    "2:3": locale_str("2:3 photo portrait"),
}
ASPECT_RATIO_CHOICES = [
    *(app_commands.Choice(name=_RATIO_NAMES[r], value=r) for r in ASPECT_RATIOS),
    app_commands.Choice(
        name=locale_str("auto (match the reference image)"), value=AUTO_ASPECT_RATIO
    ),
]


class ImagineCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(
        name=locale_str("imagine"), description=locale_str("Turn a prompt into an image (Flux-2).")
    )
    @app_commands.rename(
        prompt=locale_str("prompt"),
        aspect_ratio=locale_str("aspect_ratio"),
        resolution=locale_str("resolution"),
        image=locale_str("image"),
        image2=locale_str("image2"),
        image3=locale_str("image3"),
        image4=locale_str("image4"),
        model=locale_str("model"),
        count=locale_str("count"),
    )
    @app_commands.describe(
        prompt=locale_str("What to draw, in your own words (3 to 5000 characters)."),
        aspect_ratio=locale_str(
            "The shape. Default: yours (/settings) or 1:1; auto with a reference image."
        ),
        resolution=locale_str(
            "1K or 2K (sharper, costs more; see /quota). Default: yours (/settings) or 1K."
        ),
        image=locale_str("A reference image to start from (JPEG, PNG or WebP, up to 10 MB)."),
        image2=locale_str("A second reference image."),
        image3=locale_str("A third reference image."),
        image4=locale_str("A fourth reference image."),
        model=locale_str(
            "Flux-2 flex or pro (see /quota for what each costs). Default: the server's choice."
        ),
        count=locale_str("How many images (1-4, default 1); each is charged like one image."),
    )
    @app_commands.choices(
        aspect_ratio=ASPECT_RATIO_CHOICES,
        resolution=RESOLUTION_CHOICES,
        model=MODEL_CHOICES,
    )
    async def imagine(
        self,
        interaction: discord.Interaction[ImagineBot],
        prompt: app_commands.Range[str, PROMPT_MIN_LENGTH, PROMPT_MAX_LENGTH],
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        image: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        model: str | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
    ) -> None:
        await self._imagine(
            interaction,
            prompt,
            aspect_ratio,
            resolution,
            image,
            image2,
            image3,
            image4,
            model,
            count,
        )
        let_go(interaction)

    async def _imagine(
        self,
        interaction: discord.Interaction[ImagineBot],
        prompt: str,
        aspect_ratio: str | None,
        resolution: str | None,
        image: discord.Attachment | None,
        image2: discord.Attachment | None,
        image3: discord.Attachment | None,
        image4: discord.Attachment | None,
        model: str | None,
        count: int | None,
    ) -> None:
        prompt = prompt.strip()
        options = {"image": image, "image2": image2, "image3": image3, "image4": image4}
        attached = {name: file for name, file in options.items() if file is not None}
        problem = _attachment_problem(attached)
        if problem is not None:
            await private(interaction, problem)
            return
        # The reads below wait for this command's turn, as its checks do: in a burst, commands
        # are answered in arrival order rather than all reading at once and answering late.
        async with self.bot.generation.turn():
            asked = await self._request(
                interaction, prompt, attached, aspect_ratio, resolution, model, count
            )
        if asked is None:
            return
        outcome, tray = asked
        if isinstance(outcome, Admitted):
            # The job holds the references now (durably): a refused request keeps the tray.
            await self.bot.tray.empty(interaction.user.id, interaction.guild_id, tray)

    async def _request(
        self,
        interaction: discord.Interaction[ImagineBot],
        prompt: str,
        attached: dict[str, discord.Attachment],
        aspect_ratio: str | None,
        resolution: str | None,
        model: str | None,
        count: int | None,
    ) -> tuple[Admitted | Refused, list[TrayImage]] | None:
        """The member's defaults and tray joined to the typed options, asked for; None when
        the options themselves were refused (told privately)."""
        tray = await self.bot.tray.contents(interaction.user.id, interaction.guild_id)
        # The member's own defaults (/settings); options typed here win.
        defaults = await self.bot.storage.members.defaults(
            interaction.user.id, interaction.guild_id
        )
        ratio, size = defaults.options(aspect_ratio, resolution, reference=bool(attached or tray))
        if model is None:  # the member's choice, else the server's, else flex
            model = defaults.model or await self.bot.quota.default_model(interaction.guild_id)
        if count is None:
            count = defaults.count or 1
        urls = tuple(file.url for file in attached.values())
        asked = _image_request(prompt, ratio, size, model, urls, tray)
        if not 1 <= count <= MAX_COUNT:  # Discord enforces the range; a forged interaction may not
            asked = messages.option_not_offered()
        if isinstance(asked, str):
            await private(interaction, asked)
            return None
        request = JobRequest(
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            image=asked,
            reply=reply_target(interaction),
            role_ids=role_ids(interaction),
            count=count,
            private=defaults.private,
            locale=interaction.locale.value,
        )
        requester = InteractionRequester(interaction, private=defaults.private)
        return await self.bot.generation.request(request, requester), tray


def _attachment_problem(attached: dict[str, discord.Attachment]) -> str | None:
    """What is wrong with the first unusable attachment, naming its option unless it is the
    one `image` alone (as before there were four)."""
    for name, file in attached.items():
        problem = reference_problem(file.content_type, file.filename, file.size)
        if problem is not None:
            alone = list(attached) == ["image"]
            return problem if alone else reference_messages.option_problem(name, problem)
    return None


def _image_request(
    prompt: str,
    ratio: str,
    size: str,
    model: str,
    urls: tuple[str, ...],
    tray: Sequence[TrayImage],
) -> ImageRequest | str:
    """The options as one request, or what is wrong with them in words for the member."""
    if not PROMPT_MIN_LENGTH <= len(prompt) <= PROMPT_MAX_LENGTH:
        return messages.prompt_length_error(len(prompt))
    try:
        request = ImageRequest(
            prompt,
            parse_aspect_ratio(ratio),
            parse_resolution(size),
            parse_model(model),
            reference_urls=urls,
        )
    except ValueError:  # Discord offers only the choices; a forged interaction may not
        return messages.option_not_offered()
    joined = with_tray(request, tray)
    if isinstance(joined, TooManyReferences):
        return reference_messages.too_many_references(joined)
    if not joined.image_to_image and joined.aspect_ratio == AUTO_ASPECT_RATIO:
        return messages.auto_needs_image()
    return joined


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))
