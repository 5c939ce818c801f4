"""The buttons under every result: Re-roll, Vary, Edit and Delete.

Each button's custom id names its action and the job id (`imagine:vary:42`), and the bot
registers `ResultButton` as a dynamic item matching that pattern, so a button keeps working
after any restart without the bot remembering a view per message. A press is handed on as the
`result_button` event; `cogs/results.py` listens for it and decides what the press does.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import discord

from bot.i18n import N_, _
from bot.ui.locale import localize

CUSTOM_ID = re.compile(
    r"imagine:(?P<action>reroll|vary|edit|delete|use):(?P<job_id>[0-9]{1,19})"
    r"(?::(?P<number>[1-9]))?"
)


class ResultAction(enum.StrEnum):
    REROLL = "reroll"
    VARY = "vary"
    EDIT = "edit"  # opens the Edit form (`bot/ui/edit_form.py`)
    DELETE = "delete"
    USE = "use"  # a batch's image N, posted alone as a normal result


_LOOKS = {
    ResultAction.REROLL: (N_("Re-roll"), "🎲", discord.ButtonStyle.primary),
    ResultAction.VARY: (N_("Vary"), "🔀", discord.ButtonStyle.secondary),
    ResultAction.EDIT: (N_("Edit"), "✏️", discord.ButtonStyle.secondary),
    ResultAction.DELETE: (N_("Delete"), "🗑️", discord.ButtonStyle.danger),
    ResultAction.USE: (N_("Use"), "📌", discord.ButtonStyle.primary),
}
# The buttons under every single result (Use is for a batch's images).
SINGLE_ACTIONS = (
    ResultAction.REROLL,
    ResultAction.VARY,
    ResultAction.EDIT,
    ResultAction.DELETE,
)


class ResultButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID.pattern):
    def __init__(
        self, action: ResultAction, job_id: int, number: int | None = None, row: int | None = None
    ) -> None:
        name, emoji, style = _LOOKS[action]
        label = _(name)  # in the current locale: the job's when sent, the presser's when pressed
        custom_id = f"imagine:{action}:{job_id}"
        if number is not None:
            # A batch's image: "Vary 2" names image 2's own job (and its number, for the label).
            label, custom_id = f"{label} {number}", f"{custom_id}:{number}"
        super().__init__(
            discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id, row=row)
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
    ) -> ResultButton:
        number = int(match["number"]) if match["number"] else None
        return cls(ResultAction(match["action"]), int(match["job_id"]), number)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        localize(interaction)  # the listeners' tasks, started here, inherit the language
        interaction.client.dispatch("result_button", interaction, self.action, self.job_id)


def result_view(job_id: int) -> discord.ui.View:
    """The buttons for one result. Only dynamic items: discord.py keeps no state per message."""
    view = discord.ui.View(timeout=None)
    for action in SINGLE_ACTIONS:
        view.add_item(ResultButton(action, job_id))
    return view


def batch_view(job_ids: list[int]) -> discord.ui.View:
    """Under a batch's images: "Vary 1"… on the first row, "Use 1"… on the second (at most 4
    images, so within Discord's 5 buttons per row)."""
    view = discord.ui.View(timeout=None)
    for row, action in enumerate((ResultAction.VARY, ResultAction.USE)):
        for number, job_id in enumerate(job_ids, 1):
            view.add_item(ResultButton(action, job_id, number, row=row))
    return view


# --- Cancel, on a reply that is still waiting -----------------------------------------------------

CANCEL_ID = re.compile(r"imagine:cancel:(?P<job_id>[0-9]{1,19})")


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CANCEL_ID.pattern):
    """✖ Cancel on a waiting or queued reply; it names the (first) job of the request."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=_("Cancel"),
                emoji="✖",
                style=discord.ButtonStyle.secondary,
                custom_id=f"imagine:cancel:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
    ) -> CancelButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        localize(interaction)
        interaction.client.dispatch("cancel_button", interaction, self.job_id)


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
