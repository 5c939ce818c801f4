"""The ✖ Cancel button on a waiting or queued reply (see `bot/ui/buttons.py`).

Only the requester or a member who can manage messages may cancel. The core (`JobRunner.cancel`)
decides, atomically against the job's submission, whether it was still in time; this cog only
translates the press and the outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.discord_bot import answer_error
from bot.domain import Job, JobState
from bot.ui import messages
from bot.ui.buttons import CancelButton
from cogs.common import private

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot


class CancelCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_cancel_button(
        self, interaction: discord.Interaction[ImagineBot], job_id: int
    ) -> None:
        # A listener's errors reach no command error handler: hand them to the tree's.
        try:
            await self._press(interaction, job_id)
        except Exception as error:
            await answer_error(interaction, error, f"the cancel button of job {job_id}")

    async def _press(self, interaction: discord.Interaction[ImagineBot], job_id: int) -> None:
        job = await self.bot.storage.jobs.get_job(job_id)
        if job is None:
            await private(interaction, messages.result_unknown())
            return
        if interaction.user.id != job.user_id and not (
            interaction.guild_id is not None and interaction.permissions.manage_messages
        ):
            await private(interaction, messages.cancel_not_allowed(job.user_id))
            return
        jobs = await self._request_jobs(job)
        refunded = 0
        for each in jobs:
            if await self.bot.runner.cancel(each.id, interaction.user.id):
                refunded += each.units
        if not refunded:
            after = await self.bot.storage.jobs.get_job(job_id)
            late = after is not None and after.state is not JobState.REFUNDED
            text = messages.cancel_too_late() if late else messages.already_cancelled()
            await private(interaction, text)
            return
        still_coming = len(await self._still_open(jobs))
        if still_coming:
            # Part of a batch goes on: the reply will show its images, so the answer is private
            # (an edit here could land after the images and hide them).
            text = messages.batch_partly_cancelled(refunded, still_coming)
            await private(interaction, text)
            return
        embed = messages.cancelled_embed(job.image.prompt, refunded)
        # The reply the button is on: the press's own answer, so it works whatever the age of
        # the original interaction's token. Its buttons go with it.
        await interaction.response.edit_message(embed=embed, view=None)

    async def _request_jobs(self, job: Job) -> list[Job]:
        """The jobs one press cancels: the job itself (a batch: every one still waiting)."""
        if job.batch_id is None:
            return [job]
        return await self.bot.storage.jobs.batch_jobs(job.batch_id)

    async def _still_open(self, jobs: list[Job]) -> list[Job]:
        found = [await self.bot.storage.jobs.get_job(job.id) for job in jobs]
        return [j for j in found if j is not None and j.state is not JobState.REFUNDED]


async def setup(bot: ImagineBot) -> None:
    bot.add_dynamic_items(CancelButton)
    await bot.add_cog(CancelCog(bot))
