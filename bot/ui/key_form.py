"""The private form a server's manager types the server's own kie.ai key into.

A modal: what is typed there reaches only the bot (never a message, public or private), so the
key never shows in the channel nor in Discord's record of the command's options.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.accounts import MAX_KEY_LENGTH, MIN_KEY_LENGTH
from bot.ui import server_messages as texts

KEY_FIELD = "key"
OnKey = Callable[[discord.Interaction[Any], str], Awaitable[None]]


class KeyForm(discord.ui.Modal):
    """Asks for the key once; `on_key` checks and saves it (and answers the member)."""

    def __init__(self, on_key: OnKey) -> None:
        super().__init__(title=texts.key_form_title(), custom_id="imagine:kie-key", timeout=600)
        self._on_key = on_key
        self.key: discord.ui.TextInput[KeyForm] = discord.ui.TextInput(
            label=texts.key_form_label(),
            custom_id=KEY_FIELD,
            style=discord.TextStyle.short,
            min_length=MIN_KEY_LENGTH,
            max_length=MAX_KEY_LENGTH,
        )
        self.add_item(self.key)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self._on_key(interaction, self.key.value)
