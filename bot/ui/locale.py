"""Where Discord's locales meet the catalogues: the command translator, and the helper that
makes an interaction's texts speak its member's language.

- Commands: names, descriptions, option names and choices are `locale_str`s in the cogs;
  `CatalogueTranslator` gives Discord their localizations at sync, from the same catalogues.
- Replies: `localize(interaction)` sets the current locale (`bot.i18n`) from the member's
  client language where an interaction enters: the tree's check, each button's callback, the
  Edit form's listener. Job replies use the locale stored with the job (`DiscordReply`), and
  posts that are the server's rather than one member's (audit channel, welcome) the server's
  preferred locale.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where

from bot import i18n

log = logging.getLogger(__name__)

# Discord's rule for slash-command and option names, in every locale: lowercase where the
# letter has a case, no spaces, 1 to 32 characters.
NAME = re.compile(r"^[-_'\w]{1,32}$")
_NAMES = {Where.command_name, Where.group_name, Where.parameter_name}


def localize(interaction: discord.Interaction[Any]) -> None:
    """The member's language for every text this interaction's task writes from now on."""
    i18n.set_locale(interaction.locale.value)


def guild_locale(guild: discord.Guild | None) -> str | None:
    """A server's preferred locale (its community language), for posts that are the
    server's rather than one member's."""
    return guild.preferred_locale.value if guild is not None else None


def valid_name(name: str) -> bool:
    return bool(NAME.match(name)) and name == name.lower()


class CatalogueTranslator(app_commands.Translator):
    """Command names, descriptions and choices in each language a catalogue exists for."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        translated = i18n.translate(locale.value, string.message)
        if translated is None:
            return None
        is_context_menu = isinstance(context.data, app_commands.ContextMenu)
        if context.location in _NAMES and not is_context_menu:
            fits = valid_name(translated)
        elif context.location in _NAMES:
            fits = 1 <= len(translated) <= 32  # a message command's name: spaces allowed
        else:
            fits = 1 <= len(translated) <= 100  # descriptions and choices
        if not fits:
            # Discord would refuse the whole sync for one bad entry: keep the English one.
            log.warning("%s: %r does not fit Discord's rules; left out", locale.value, translated)
            return None
        return translated
