"""The Edit form: a Discord modal, prefilled with a result's prompt and options, that runs the
edited request as a new image.

Its custom id names the job (`imagine:edit:42`), like the result buttons, and the bot reads the
submission from that id and the submitted values alone (`cogs/results.py` listens for modal
submissions), so a form opened before a restart still works after it: no modal object is kept
in memory for it (see `edit_form`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import discord

from bot.domain import ImageRequest
from bot.i18n import N_, _
from bot.options import format_options

FORM_ID = re.compile(r"imagine:edit:(?P<job_id>[0-9]{1,19})")
PROMPT_FIELD = "prompt"
OPTIONS_FIELD = "options"
# Discord's limits for a text input: at most 4000 characters, value and max_length alike.
FORM_TEXT_LIMIT = 4000
OPTIONS_PLACEHOLDER = N_("ar 16:9, res 2K, model pro (anything left out stays as it was)")
_OPTIONS_LIMIT = 100


@dataclass(frozen=True)
class EditSubmission:
    job_id: int
    prompt: str
    options: str


def edit_form(job_id: int, image: ImageRequest, prompt_min: int) -> discord.ui.Modal:
    """The form for one result. It is marked finished before it is sent, so discord.py does not
    keep it: every submission, before or after a restart, is read by `read_submission`."""
    form = discord.ui.Modal(title=_("Edit and run again"), custom_id=f"imagine:edit:{job_id}")
    form.add_item(
        discord.ui.TextInput(
            label=_("Prompt"),
            custom_id=PROMPT_FIELD,
            style=discord.TextStyle.paragraph,
            default=image.prompt,
            min_length=prompt_min,
            max_length=FORM_TEXT_LIMIT,
        )
    )
    form.add_item(
        discord.ui.TextInput(
            label=_("Options: ar (shape), res (1K/2K), model"),
            custom_id=OPTIONS_FIELD,
            style=discord.TextStyle.short,
            default=format_options(image),
            placeholder=_(OPTIONS_PLACEHOLDER),
            required=False,
            max_length=_OPTIONS_LIMIT,
        )
    )
    form.stop()
    return form


def read_submission(interaction: discord.Interaction[Any]) -> EditSubmission | None:
    """The Edit form's values from a modal submission; None for any other interaction."""
    if interaction.type is not discord.InteractionType.modal_submit:
        return None
    data: Any = interaction.data or {}
    found = FORM_ID.fullmatch(str(data.get("custom_id", "")))
    if found is None:
        return None
    values = _values(data.get("components") or [])
    return EditSubmission(
        int(found["job_id"]), values.get(PROMPT_FIELD, ""), values.get(OPTIONS_FIELD, "")
    )


def _values(components: list[Any]) -> dict[str, str]:
    """Every submitted text input by custom id, whether in action rows or labels."""
    values: dict[str, str] = {}
    for component in components:
        if not isinstance(component, dict):
            continue
        values.update(_values(component.get("components") or []))
        if isinstance(component.get("component"), dict):
            values.update(_values([component["component"]]))
        if isinstance(component.get("custom_id"), str) and "value" in component:
            values[component["custom_id"]] = str(component["value"] or "")
    return values
