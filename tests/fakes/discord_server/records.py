"""Constants of the platform, the records tests read (``RecordedRequest``, ``FakeInteraction``…)
and the time helpers every part of the fake shares."""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from typing import Any, Final

import discord

API_PREFIX: Final = "/api/v10"
GATEWAY_PATH: Final = "/gateway"
CDN_PREFIX: Final = "/attachments"
# Files a user attached to a slash-command option live here on Discord's CDN.
EPHEMERAL_CDN_PREFIX: Final = "/ephemeral-attachments"

DEFAULT_APPLICATION_ID: Final = 1_300_000_000_000_000_001
DEFAULT_GUILD_ID: Final = 1_300_000_000_000_000_100
DEFAULT_CHANNEL_ID: Final = 1_300_000_000_000_000_200
DEFAULT_OWNER_ID: Final = 1_300_000_000_000_000_300
DEFAULT_USER_ID: Final = 1_300_000_000_000_000_400
# Distinct from the application owner, so a test can tell "bot owner" from "server owner".
DEFAULT_GUILD_OWNER_ID: Final = 1_300_000_000_000_000_500

TOKEN_LIFETIME: Final = dt.timedelta(minutes=15)
DEFAULT_UPLOAD_LIMIT: Final = 10 * 1024 * 1024
HEARTBEAT_INTERVAL_MS: Final = 41_250
# Observed limit of the per-token interaction webhook bucket.
WEBHOOK_BUCKET_LIMIT: Final = 5
WEBHOOK_BUCKET_WINDOW: Final = 2.0
# Generous numbers for every other route, so discord.py never pre-emptively waits.
GENERIC_BUCKET_LIMIT: Final = 50

# Message flags (https://discord.com/developers/docs/resources/message#message-object-message-flags)
SUPPRESS_EMBEDS: Final = 1 << 2
EPHEMERAL: Final = 1 << 6
LOADING: Final = 1 << 7
SUPPRESS_NOTIFICATIONS: Final = 1 << 12
IS_COMPONENTS_V2: Final = 1 << 15
_CREATE_FLAGS: Final = EPHEMERAL | SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2
_CHANNEL_FLAGS: Final = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2
_EDIT_FLAGS: Final = SUPPRESS_EMBEDS | IS_COMPONENTS_V2

# Interaction types (https://discord.com/developers/docs/interactions/receiving-and-responding)
APPLICATION_COMMAND: Final = 2
CHAT_INPUT: Final = 1  # application command types
MESSAGE_COMMAND: Final = 3  # a message context-menu command
MESSAGE_COMPONENT: Final = 3
MODAL_SUBMIT: Final = 5

# Component types and limits (https://discord.com/developers/docs/components/reference)
_ACTION_ROW: Final = 1
_BUTTON: Final = 2
_SELECTS: Final = frozenset({3, 5, 6, 7, 8})
_TEXT_INPUT: Final = 4
_LABEL: Final = 18
# Modals (https://discord.com/developers/docs/components/reference#text-input)
_MAX_MODAL_TITLE: Final = 45
_MAX_MODAL_COMPONENTS: Final = 5
_MAX_TEXT_INPUT_LABEL: Final = 45
_MAX_TEXT_INPUT_LENGTH: Final = 4000
_MAX_PLACEHOLDER: Final = 100
_LINK_STYLE: Final = 5
_PREMIUM_STYLE: Final = 6
_MAX_ACTION_ROWS: Final = 5
_MAX_ROW_WIDTH: Final = 5
_MAX_CUSTOM_ID: Final = 100
_MAX_LABEL: Final = 80
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"

_PRIVILEGED_INTENTS: Final = discord.Intents(
    members=True, presences=True, message_content=True
).value
_ALL_PERMISSIONS: Final = discord.Permissions.all().value
_ADMINISTRATOR: Final = discord.Permissions(administrator=True).value
_EVERYONE_PERMISSIONS: Final = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
    use_application_commands=True,
    create_instant_invite=True,
    change_nickname=True,
).value

_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")
_FILE_FIELD = re.compile(r"^files\[(\d+)\]$")


class _Default(enum.Enum):
    GUILD = enum.auto()


DEFAULT_GUILD: Final = _Default.GUILD
"""Sentinel for ``send_interaction(guild_id=...)``: the fake's own guild (``None`` means a DM)."""


@dataclass
class RecordedFile:
    field_name: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    files: list[RecordedFile]
    status: int
    at: float


@dataclass
class FakeInteraction:
    id: int
    token: str
    application_id: int
    user_id: int
    channel_id: int
    guild_id: int | None
    # For a button press: the message the button is on (for a modal's submission: the message
    # whose button opened the modal, if one did).
    message_id: int | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="microseconds")
