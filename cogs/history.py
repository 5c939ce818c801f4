"""/history: a member's own images in this server, privately; Show posts one again, and
`/history forget` erases their words and links (see `bot/history.py`).

discord.py cannot have a command and a group both named `history`, so the list is
`/history list` beside `/history forget`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.discord_bot import answer_error
from bot.history import NotShown, RuleRefused, ShowRequest
from bot.ui import messages
from bot.ui.history_buttons import (
    ForgetButton,
    ForgetScope,
    ShowButton,
    forget_view,
    history_view,
)
from bot.ui.reply import NO_PINGS
from cogs.common import age_restricted, private, refuse_after_defer, reply_target, role_ids

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

HISTORY_LENGTH = 10


class HistoryCog(
    commands.GroupCog,
    group_name=locale_str("history"),
    group_description=locale_str("Your own images: list them, show one again, or forget them."),
):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(
        name=locale_str("list"),
        description=locale_str("See your latest images, and show one again."),
    )
    async def list_(self, interaction: discord.Interaction[ImagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        history = self.bot.history
        jobs = await history.entries(interaction.user.id, interaction.guild_id, HISTORY_LENGTH)
        showable = [(n, job) for n, job in enumerate(jobs, start=1) if history.showable(job)]
        embed = messages.history_embed(jobs, {job.id for _, job in showable})
        view = history_view(showable) if showable else discord.utils.MISSING
        await interaction.followup.send(
            embed=embed, view=view, ephemeral=True, allowed_mentions=NO_PINGS
        )

    @app_commands.command(
        name=locale_str("forget"),
        description=locale_str("Erase the prompts and links of your finished images."),
    )
    @app_commands.rename(everywhere=locale_str("everywhere"))
    @app_commands.describe(
        everywhere=locale_str("Forget them in every server and in direct messages, not only here.")
    )
    async def forget(
        self, interaction: discord.Interaction[ImagineBot], everywhere: bool = False
    ) -> None:
        scope = ForgetScope.EVERYWHERE if everywhere else ForgetScope.HERE
        await interaction.response.send_message(
            messages.forget_confirm(everywhere, interaction.guild_id is None),
            view=forget_view(scope, interaction.user.id),
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )

    @commands.Cog.listener()
    async def on_history_show(
        self, interaction: discord.Interaction[ImagineBot], job_id: int
    ) -> None:
        # A listener's errors reach no command error handler: hand them to the tree's.
        try:
            await self._show(interaction, job_id)
        except Exception as error:
            await answer_error(interaction, error, f"the Show button of job {job_id}")

    @commands.Cog.listener()
    async def on_history_forget(
        self, interaction: discord.Interaction[ImagineBot], scope: ForgetScope, user_id: int
    ) -> None:
        try:
            await self._forget(interaction, scope, user_id)
        except Exception as error:
            await answer_error(interaction, error, "the Forget button")

    async def _show(self, interaction: discord.Interaction[ImagineBot], job_id: int) -> None:
        if not await self.bot.gate_passed(interaction):
            return
        request = ShowRequest(
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            role_ids=role_ids(interaction),
            job_id=job_id,
            age_restricted=await age_restricted(interaction),
            locale=interaction.locale.value,
        )
        history = self.bot.history
        checked = await history.check(request)
        if isinstance(checked, NotShown):
            await private(interaction, messages.not_shown(checked))
            return
        if isinstance(checked, RuleRefused):
            await private(interaction, messages.refusal_text(checked.refusal))
            await history.record(checked)
            return
        # Public, in this channel: the image was public when it was made, and its buttons
        # (Re-roll, Vary) are for the channel. The download may take longer than Discord's 3 s.
        await interaction.response.defer(thinking=True)
        problem = await history.show(request, checked, reply_target(interaction))
        if problem is not None:
            await refuse_after_defer(interaction, messages.not_shown(problem))

    async def _forget(
        self, interaction: discord.Interaction[ImagineBot], scope: ForgetScope, user_id: int
    ) -> None:
        if interaction.user.id != user_id:
            await private(interaction, messages.forget_not_yours())
            return
        count = await self.bot.history.forget(
            user_id, interaction.guild_id, scope is ForgetScope.EVERYWHERE
        )
        # The confirmation becomes the answer, without its button: it cannot be pressed twice.
        await interaction.response.edit_message(
            content=messages.forgotten(count), view=None, allowed_mentions=NO_PINGS
        )


async def setup(bot: ImagineBot) -> None:
    # Registered once per process: the buttons of every earlier answer work again at once.
    bot.add_dynamic_items(ShowButton, ForgetButton)
    await bot.add_cog(HistoryCog(bot))
