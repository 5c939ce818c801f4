"""The buttons of `/history`: Show under each entry, and the confirmation of `/history forget`.

Like the result buttons, each custom id says all a press needs (`imagine:show:42`,
`imagine:forget:here:501`) and is matched by a dynamic item registered once per process, so the
buttons of a /history answer keep working after a restart. What a press names is never trusted:
`cogs/history.py` checks that the job, or the forgetting, is the presser's own.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import discord

from bot.domain import Job
from bot.i18n import _
from bot.ui.locale import localize

SHOW_ID = re.compile(r"imagine:show:(?P<job_id>[0-9]{1,19})")
FORGET_ID = re.compile(r"imagine:forget:(?P<scope>here|everywhere):(?P<user_id>[0-9]{1,19})")
# Discord: at most 5 buttons in a row, 5 rows in a message.
PER_ROW = 5


class ForgetScope(enum.StrEnum):
    HERE = "here"  # this server (in direct messages: the direct messages)
    EVERYWHERE = "everywhere"


class ShowButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=SHOW_ID.pattern):
    def __init__(self, job_id: int, number: int = 0) -> None:
        super().__init__(
            discord.ui.Button(
                label=_("Show {number}").format(number=number) if number else _("Show"),
                emoji="🖼️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"imagine:show:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
    ) -> ShowButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        localize(interaction)  # the listeners' tasks, started here, inherit the language
        interaction.client.dispatch("history_show", interaction, self.job_id)


class ForgetButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=FORGET_ID.pattern):
    def __init__(self, scope: ForgetScope, user_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=_("Forget them"),
                emoji="🧹",
                style=discord.ButtonStyle.danger,
                custom_id=f"imagine:forget:{scope}:{user_id}",
            )
        )
        self.scope = scope
        self.user_id = user_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
    ) -> ForgetButton:
        return cls(ForgetScope(match["scope"]), int(match["user_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        localize(interaction)
        interaction.client.dispatch("history_forget", interaction, self.scope, self.user_id)


def history_view(entries: list[tuple[int, Job]]) -> discord.ui.View:
    """Show buttons for the numbered entries that can be shown, five to a row."""
    view = discord.ui.View(timeout=None)
    for index, (number, job) in enumerate(entries):
        button = ShowButton(job.id, number)
        button.item.row = index // PER_ROW
        view.add_item(button)
    return view


def forget_view(scope: ForgetScope, user_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ForgetButton(scope, user_id))
    return view
