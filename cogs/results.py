"""What the buttons under a result do (see `bot/ui/buttons.py` for the buttons themselves).

- Re-roll: the same prompt and options again, as a new job charged to whoever pressed it.
- Vary: a new image from the same prompt with this result as the reference image.
- Edit: a form (`bot/ui/edit_form.py`) prefilled with the prompt and options; its submission
  runs the edited request as a new job, charged to whoever submitted it.
- Delete: removes the result; only its requester or a member who can manage messages may.

Re-roll, Vary and Edit go through every check `/imagine` does (restart, ban, channel,
blocklist, quota, budget), because the member pressing may not be the one who asked, and the
server's rules may have changed since.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import time
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.discord_bot import answer_error
from bot.domain import Job, JobState, Origin
from bot.jobs import JobRequest
from bot.kie import (
    AUTO_ASPECT_RATIO,
    PROMPT_MAX_LENGTH,
    PROMPT_MIN_LENGTH,
    REFERENCE_LIFETIME,
    ImageRequest,
)
from bot.options import OptionsError, parse_options
from bot.ui import messages
from bot.ui.buttons import ResultAction, ResultButton, result_view
from bot.ui.edit_form import FORM_TEXT_LIMIT, EditSubmission, edit_form, read_submission
from bot.ui.locale import localize
from bot.ui.reply import NO_PINGS
from cogs.common import InteractionRequester, private, reference_problem, reply_target, role_ids

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

log = logging.getLogger(__name__)


class ResultsCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_result_button(
        self, interaction: discord.Interaction[ImagineBot], action: ResultAction, job_id: int
    ) -> None:
        # A listener's errors reach no command error handler: hand them to the tree's.
        try:
            await self._press(interaction, action, job_id)
        except Exception as error:
            await answer_error(interaction, error, f"the {action} button of job {job_id}")

    async def _press(
        self, interaction: discord.Interaction[ImagineBot], action: ResultAction, job_id: int
    ) -> None:
        job = await self.bot.storage.jobs.get_job(job_id)
        # DELIVERING too: the buttons are on screen a moment before the job is recorded done.
        if job is None or job.state not in (JobState.DELIVERING, JobState.DELIVERED):
            await private(interaction, messages.result_unknown())
            return
        if action is ResultAction.DELETE:
            # Re-roll and Vary meet every rule of Generation; Delete only this one.
            if await self.bot.gate_passed(interaction):
                await self._delete(interaction, job)
        elif action is ResultAction.EDIT:
            await self._open_form(interaction, job)
        elif action is ResultAction.USE:
            if await self.bot.gate_passed(interaction):
                await self._use(interaction, job)
        elif action is ResultAction.REROLL:
            await self._again(interaction, job, Origin.REROLL)
        else:
            await self._again(interaction, job, Origin.VARY)

    async def _open_form(self, interaction: discord.Interaction[ImagineBot], job: Job) -> None:
        """Show the Edit form; opening it is free, its submission meets every rule."""
        if not await self.bot.gate_passed(interaction):
            return
        if len(job.image.prompt) > FORM_TEXT_LIMIT:
            text = messages.prompt_too_long_to_edit(len(job.image.prompt), FORM_TEXT_LIMIT)
            await private(interaction, text)
            return
        if job.image.image_to_image and _reference_expired(job):
            await private(interaction, messages.reference_expired())
            return
        await interaction.response.send_modal(edit_form(job.id, job.image, PROMPT_MIN_LENGTH))

    @commands.Cog.listener()
    async def on_form_submitted(self, interaction: discord.Interaction[ImagineBot]) -> None:
        # Every form's submission passes here (`ImagineBot.dispatch`); only the Edit form's are
        # ours. They are read from the interaction itself, so forms opened before a restart
        # work too.
        submission = read_submission(interaction)
        if submission is None:
            return
        localize(interaction)  # this listener's own task: no check or button set it
        try:
            await self._submit_form(interaction, submission)
        except Exception as error:
            await answer_error(interaction, error, f"the Edit form of job {submission.job_id}")

    async def _submit_form(
        self, interaction: discord.Interaction[ImagineBot], submission: EditSubmission
    ) -> None:
        parent = await self.bot.storage.jobs.get_job(submission.job_id)
        if parent is None or parent.state not in (JobState.DELIVERING, JobState.DELIVERED):
            await private(interaction, messages.result_unknown())
            return
        prompt = submission.prompt.strip()
        if not PROMPT_MIN_LENGTH <= len(prompt) <= PROMPT_MAX_LENGTH:
            await private(interaction, messages.prompt_length_error(len(prompt)))
            return
        # The original's references come along (already on kie.ai's host, as for a re-roll).
        edited = parse_options(submission.options, dataclasses.replace(parent.image, prompt=prompt))
        if isinstance(edited, OptionsError):
            await private(interaction, messages.options_not_understood(edited))
            return
        if edited.aspect_ratio == AUTO_ASPECT_RATIO and not edited.image_to_image:
            await private(interaction, messages.auto_without_reference())
            return
        if edited.image_to_image and _reference_expired(parent):
            await private(interaction, messages.reference_expired())
            return
        await self._generate(interaction, parent, edited, Origin.EDIT)

    async def _delete(self, interaction: discord.Interaction[ImagineBot], job: Job) -> None:
        permissions = interaction.permissions
        if interaction.user.id != job.user_id and not (
            interaction.guild_id is not None and permissions.manage_messages
        ):
            await private(interaction, messages.delete_not_allowed(job.user_id))
            return
        # Acknowledge without a new message; "@original" is then the message with the button.
        await interaction.response.defer()
        try:
            await interaction.delete_original_response()
        except discord.NotFound:
            pass  # already gone
        except discord.HTTPException:
            # The interaction route refused: the bot's own message can go by the channel route.
            if interaction.message is not None:
                with contextlib.suppress(discord.NotFound):
                    await interaction.message.delete()
        await self.bot.admin_events.result_deleted(job, interaction.guild_id, interaction.user.id)

    async def _use(self, interaction: discord.Interaction[ImagineBot], job: Job) -> None:
        """A batch's image posted alone, as a normal result with the usual buttons."""
        if interaction.user.id != job.user_id and not (
            interaction.guild_id is not None and interaction.permissions.manage_messages
        ):
            await private(interaction, messages.use_not_allowed(job.user_id))
            return
        attachment = _result_image(interaction.message, job.id)
        if attachment is None:
            await private(interaction, messages.nothing_to_use())
            return
        await interaction.response.defer(thinking=True)
        data = await attachment.read()
        file = discord.File(io.BytesIO(data), filename=attachment.filename)
        shown = "" if attachment.is_spoiler() else attachment.filename
        await interaction.followup.send(
            embed=messages.used_embed(job, shown),
            file=file,
            view=result_view(job.id),
            allowed_mentions=NO_PINGS,
        )

    async def _again(
        self, interaction: discord.Interaction[ImagineBot], parent: Job, origin: Origin
    ) -> None:
        image = parent.image  # a re-roll: the same request, references already uploaded
        if origin is Origin.REROLL and image.image_to_image and _reference_expired(parent):
            await private(interaction, messages.reference_expired())
            return
        if origin is Origin.VARY:
            attachment = _result_image(interaction.message, parent.id)
            if attachment is None:
                await private(interaction, messages.nothing_to_vary())
                return
            problem = reference_problem(
                attachment.content_type, attachment.filename, attachment.size
            )
            if problem is not None:
                await private(interaction, problem)
                return
            # The result itself, as the message now links it (Discord refreshes signed links).
            image = ImageRequest(
                image.prompt,
                AUTO_ASPECT_RATIO,
                image.resolution,
                image.model,
                reference_urls=(attachment.url,),
                nsfw_checker=image.nsfw_checker,
            )
        await self._generate(interaction, parent, image, origin)

    async def _generate(
        self,
        interaction: discord.Interaction[ImagineBot],
        parent: Job,
        image: ImageRequest,
        origin: Origin,
    ) -> None:
        """A new job from a result, charged to whoever pressed or submitted, in a new reply."""
        # Private when the presser wants their results so, or when the result was private:
        # a new image from a private one stays as private as its parent.
        defaults = await self.bot.storage.members.defaults(
            interaction.user.id, interaction.guild_id
        )
        hidden = defaults.private or parent.private
        request = JobRequest(
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            image=image,
            reply=reply_target(interaction),
            role_ids=role_ids(interaction),
            origin=origin,
            parent_job_id=parent.id,
            private=hidden,
            locale=interaction.locale.value,
        )
        await self.bot.generation.request(
            request, InteractionRequester(interaction, private=hidden)
        )


def _reference_expired(job: Job) -> bool:
    """kie.ai's file host deletes uploads after 3 days; an hour of margin for the job itself."""
    return time.time() - job.created_at > REFERENCE_LIFETIME - 3600


def _result_image(message: discord.Message | None, job_id: int) -> discord.Attachment | None:
    """The job's image on the message: in a batch's message, the one named after the job."""
    if message is None:
        return None
    images = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
    for attachment in images:
        if attachment.filename.removeprefix("SPOILER_").startswith(f"imagine-{job_id}."):
            return attachment
    return images[0] if len(images) == 1 else None


async def setup(bot: ImagineBot) -> None:
    # Registered once per process: the buttons of every earlier result work again at once.
    bot.add_dynamic_items(ResultButton)
    await bot.add_cog(ResultsCog(bot))
