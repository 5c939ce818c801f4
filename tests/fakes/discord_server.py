"""A wire-level fake of Discord for tests: REST under ``/api/v10`` plus the gateway websocket.

This module owns the fake service and nothing else: an aiohttp server on 127.0.0.1 that an
unmodified discord.py 2.7 client logs in to, connects its gateway to, receives injected
INTERACTION_CREATE events from (slash commands and button presses), and answers over REST. It
records every REST request faithfully (tests assert on what the bot sent), keeps the state Discord
would keep (interaction responses, followups, channel and DM messages with their components, guild
roles, synced commands, gateway sessions, uploaded attachments served by a small CDN), enforces
the platform rules a bot can trip over (token lifetime, double acknowledgement, callback types per
interaction type, message, component and command limits, upload limits, the small
interaction-webhook rate limit) and lets a test inject faults.

Wire formats were checked against discord.py 2.7.1 (``http.py``, ``webhook/async_.py``,
``gateway.py``, ``state.py``, ``interactions.py``); see ``/work/shared/DISCORD-NOTES.md``.

Redirect a bot to it with::

    fake = FakeDiscord()
    await fake.start()
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url)
    )
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import enum
import hashlib
import json
import math
import mimetypes
import re
import secrets
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import discord
from aiohttp import BodyPartReader, WSMsgType, web

__all__ = [
    "DEFAULT_GUILD",
    "DEFAULT_USER_ID",
    "FakeDiscord",
    "FakeInteraction",
    "RecordedFile",
    "RecordedRequest",
]

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
MESSAGE_COMPONENT: Final = 3

# Component types and limits (https://discord.com/developers/docs/components/reference)
_ACTION_ROW: Final = 1
_BUTTON: Final = 2
_SELECTS: Final = frozenset({3, 5, 6, 7, 8})
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


# --------------------------------------------------------------------------- public records


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
    # For a button press: the message the button is on.
    message_id: int | None = None


# --------------------------------------------------------------------------- internals

_Problem = tuple[tuple[str | int, ...], str, str]


class _ApiError(Exception):
    """A Discord JSON error answer, raised by route handlers."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: dict[str, Any] = {"code": code, "message": message}
        if errors:
            self.body["errors"] = errors


_DROPPED_STATUS: Final = -1  # a fault that closes the connection instead of answering


@dataclass
class _Reply:
    status: int = 200
    body: Any = None  # None: no body (204)
    headers: dict[str, str] = field(default_factory=dict)


_Handler = Callable[[RecordedRequest, "re.Match[str]"], _Reply]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: _Handler
    bot_auth: bool
    webhook_bucket: bool = False


@dataclass
class _Fault:
    method: str
    path_contains: str
    remaining: int
    reply: Callable[[], _Reply]


@dataclass
class _Window:
    started: float
    used: int = 0


@dataclass
class _InteractionState:
    info: FakeInteraction
    name: str  # the command's name, or the pressed button's custom_id
    user: dict[str, Any]
    attachment_size_limit: int
    dispatched_at: float
    kind: int = APPLICATION_COMMAND
    callback_type: int | None = None
    callback_at: float | None = None
    original_id: int | None = None
    # A deferred ("thinking") original that no edit or followup has completed yet.
    original_pending: bool = False
    followup_ids: list[int] = field(default_factory=list)
    revoked: bool = False


@dataclass(eq=False)
class _GatewayConn:
    ws: web.WebSocketResponse
    session: _GatewaySession | None = None

    async def send(self, payload: dict[str, Any]) -> bool:
        """Send one frame; False if the socket is already going away."""
        try:
            await self.ws.send_str(json.dumps(payload))
        except (ConnectionError, RuntimeError):
            return False
        return True


@dataclass(eq=False)
class _GatewaySession:
    session_id: str
    seq: int = 0
    # Every dispatch, kept so a RESUME can replay what the client missed.
    history: list[dict[str, Any]] = field(default_factory=list)
    conn: _GatewayConn | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _form_error(problems: list[_Problem]) -> _ApiError:
    """Discord's 50035 answer, with the nested ``errors`` object it uses."""
    errors: dict[str, Any] = {}
    for path, code, message in problems:
        node = errors
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return _ApiError(400, 50035, "Invalid Form Body", errors)


def _length_problems(
    path: tuple[str | int, ...], value: Any, low: int, high: int
) -> list[_Problem]:
    if isinstance(value, str) and low <= len(value) <= high:
        return []
    return [(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")]


def _name_problems(path: tuple[str | int, ...], name: Any, *, chat_input: bool) -> list[_Problem]:
    problems = _length_problems(path, name, 1, 32)
    if not problems and chat_input and (not _COMMAND_NAME.match(name) or name != name.lower()):
        problems.append((path, "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"))
    return problems


def _option_problems(path: tuple[str | int, ...], options: list[Any]) -> list[_Problem]:
    problems: list[_Problem] = []
    if len(options) > 25:
        problems.append((path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."))
    names: set[str] = set()
    seen_optional = False
    for index, option in enumerate(options):
        where = (*path, index)
        problems += _name_problems((*where, "name"), option.get("name"), chat_input=True)
        if option.get("name") in names:
            problems.append(
                ((*where, "name"), "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS", "Duplicate")
            )
        names.add(option.get("name"))
        problems += _length_problems((*where, "description"), option.get("description"), 1, 100)
        if option.get("type") in (1, 2):  # sub-command / group: options nest
            problems += _option_problems((*where, "options"), option.get("options") or [])
            continue
        if option.get("required"):
            if seen_optional:
                problems.append(
                    (
                        where,
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
                )
        else:
            seen_optional = True
        choices = option.get("choices") or []
        if len(choices) > 25:
            problems.append(
                ((*where, "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            )
        for c_index, choice in enumerate(choices):
            problems += _length_problems(
                (*where, "choices", c_index, "name"), choice["name"], 1, 100
            )
            if isinstance(choice.get("value"), str) and len(choice["value"]) > 100:
                problems += _length_problems(
                    (*where, "choices", c_index, "value"), choice["value"], 1, 100
                )
        for key, low in (("min_length", 0), ("max_length", 1)):
            value = option.get(key)
            if value is not None and not low <= value <= 6000:
                problems.append(
                    (
                        (*where, key),
                        "NUMBER_TYPE_MAX" if value > 6000 else "NUMBER_TYPE_MIN",
                        f"int value should be between {low} and 6000.",
                    )
                )
    return problems


def _command_problems(commands: list[Any]) -> list[_Problem]:
    """The checks Discord makes at sync time (discord.py checks none of them locally)."""
    problems: list[_Problem] = []
    seen: set[tuple[Any, Any]] = set()
    for index, command in enumerate(commands):
        if not isinstance(command, dict):
            problems.append(((index,), "DICT_TYPE_CONVERT", "Only dictionaries may be used"))
            continue
        ctype = command.get("type", 1)
        name = command.get("name")
        problems += _name_problems((index, "name"), name, chat_input=ctype == 1)
        if (name, ctype) in seen:
            problems.append(
                ((index, "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME", "Duplicate command name")
            )
        seen.add((name, ctype))
        description = command.get("description") or ""
        if ctype == 1:
            problems += _length_problems((index, "description"), description, 1, 100)
        elif description:
            problems.append(
                (
                    (index, "description"),
                    "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
                    "Context menu commands cannot have description",
                )
            )
        problems += _option_problems((index, "options"), command.get("options") or [])
    return problems


def _message_problems(payload: dict[str, Any]) -> list[_Problem]:
    """Content and embed limits (2000 chars; 10 embeds, 6000 chars in all, per-field limits)."""
    problems: list[_Problem] = []
    content = payload.get("content")
    if isinstance(content, str) and len(content) > 2000:
        problems.append((("content",), "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."))
    embeds = payload.get("embeds") or []
    if len(embeds) > 10:
        problems.append((("embeds",), "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."))
    total = 0

    def check(
        path: tuple[str | int, ...], value: Any, limit: int, *, required: bool = False
    ) -> None:
        nonlocal total
        if value is None:
            if required:
                problems.append((path, "BASE_TYPE_REQUIRED", "This field is required"))
            return
        size = len(str(value))
        total += size
        if size > limit or (required and size == 0):
            problems.append(
                (path, "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {limit} in length.")
            )

    for index, embed in enumerate(embeds):
        where: tuple[str | int, ...] = ("embeds", index)
        check((*where, "title"), embed.get("title"), 256)
        check((*where, "description"), embed.get("description"), 4096)
        check((*where, "footer", "text"), (embed.get("footer") or {}).get("text"), 2048)
        check((*where, "author", "name"), (embed.get("author") or {}).get("name"), 256)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            problems.append(
                ((*where, "fields"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            )
        for f_index, embed_field in enumerate(fields):
            check((*where, "fields", f_index, "name"), embed_field.get("name"), 256, required=True)
            check(
                (*where, "fields", f_index, "value"), embed_field.get("value"), 1024, required=True
            )
    if total > 6000:
        problems.append(
            (("embeds",), "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        )
    return problems


def _walk_components(
    components: list[Any], path: tuple[str | int, ...] = ("components",)
) -> list[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every component of a message, depth first, with its form-error path."""
    found: list[tuple[tuple[str | int, ...], dict[str, Any]]] = []
    for index, component in enumerate(components):
        if not isinstance(component, dict):
            continue
        where = (*path, index)
        found.append((where, component))
        # Action rows and containers nest in "components", a section's button in "accessory".
        found += _walk_components(component.get("components") or [], (*where, "components"))
        if isinstance(component.get("accessory"), dict):
            found.append(((*where, "accessory"), component["accessory"]))
    return found


def _button_problems(path: tuple[str | int, ...], button: dict[str, Any]) -> list[_Problem]:
    problems: list[_Problem] = []
    style = button.get("style")
    if style not in range(1, _PREMIUM_STYLE + 1):
        problems.append(
            ((*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5, 6}.")
        )
        return problems
    custom_id, label = button.get("custom_id"), button.get("label")
    if style == _LINK_STYLE:
        if not button.get("url"):
            problems.append(((*path, "url"), "BUTTON_COMPONENT_URL_REQUIRED", "A url is required"))
        if custom_id is not None:
            problems.append(
                (
                    (*path, "custom_id"),
                    "BUTTON_COMPONENT_LINK_HAS_CUSTOM_ID",
                    "A custom id cannot be used with a link button",
                )
            )
    elif style == _PREMIUM_STYLE:
        if not button.get("sku_id"):
            problems.append(((*path, "sku_id"), "BASE_TYPE_REQUIRED", "This field is required"))
        if any(button.get(k) for k in ("custom_id", "label", "url", "emoji")):
            problems.append(
                (
                    path,
                    "BUTTON_COMPONENT_PREMIUM_INVALID",
                    "Premium buttons cannot have a custom id, label, url or emoji",
                )
            )
    else:
        if custom_id is None:
            problems.append(
                (
                    (*path, "custom_id"),
                    "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED",
                    "A custom id is required",
                )
            )
        if button.get("url") is not None:
            problems.append(
                (
                    (*path, "url"),
                    "BUTTON_COMPONENT_INVALID_URL",
                    "Only link buttons can have a url",
                )
            )
    if custom_id is not None:
        problems += _length_problems((*path, "custom_id"), custom_id, 1, _MAX_CUSTOM_ID)
    if label is not None and (not isinstance(label, str) or len(label) > _MAX_LABEL):
        problems.append(
            (
                (*path, "label"),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {_MAX_LABEL} or fewer in length.",
            )
        )
    if style != _PREMIUM_STYLE and not label and not button.get("emoji"):
        problems.append(
            (
                (*path, "label"),
                "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED",
                "A label or emoji is required",
            )
        )
    return problems


def _component_problems(components: Any, *, v2: bool) -> list[_Problem]:
    """Layout checks Discord makes on message components (action rows and buttons).

    Without IS_COMPONENTS_V2 a message holds at most 5 top-level action rows; either way an
    action row holds 1-5 buttons or one select, and custom ids are unique in the message.
    """
    if components is None:
        return []
    if not isinstance(components, list):
        return [(("components",), "BASE_TYPE_ARRAY", "Must be an array")]
    problems: list[_Problem] = []
    if not v2:
        if len(components) > _MAX_ACTION_ROWS:
            problems.append(
                (
                    ("components",),
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {_MAX_ACTION_ROWS} or fewer in length.",
                )
            )
        for index, component in enumerate(components):
            if not isinstance(component, dict) or component.get("type") != _ACTION_ROW:
                problems.append(
                    (
                        ("components", index, "type"),
                        "UNION_TYPE_CHOICES",
                        'Value of field "type" must be one of (1,).',
                    )
                )
    seen: set[str] = set()
    for path, component in _walk_components(components):
        ctype = component.get("type")
        if ctype == _ACTION_ROW:
            children = component.get("components") or []
            if not 1 <= len(children) <= _MAX_ROW_WIDTH:
                problems.append(
                    (
                        (*path, "components"),
                        "BASE_TYPE_BAD_LENGTH",
                        f"Must be between 1 and {_MAX_ROW_WIDTH} in length.",
                    )
                )
            kinds = [c.get("type") for c in children if isinstance(c, dict)]
            if any(k in _SELECTS for k in kinds) and len(kinds) > 1:
                problems.append(
                    (
                        (*path, "components"),
                        "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                        "The specified component exceeds the maximum width",
                    )
                )
        elif ctype == _BUTTON:
            problems += _button_problems(path, component)
        custom_id = component.get("custom_id")
        if isinstance(custom_id, str):
            if custom_id in seen:
                problems.append(
                    (
                        (*path, "custom_id"),
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    )
                )
            seen.add(custom_id)
    return problems


def _numbered_components(components: list[Any]) -> list[dict[str, Any]]:
    """A copy with Discord's component ids: each component without one gets the next free
    number, depth first from 1, skipping ids the bot chose itself."""
    numbered = copy.deepcopy(components)
    walked = [c for _, c in _walk_components(numbered)]
    taken = {c["id"] for c in walked if isinstance(c.get("id"), int) and c["id"] > 0}
    next_id = 1
    for component in walked:
        if isinstance(component.get("id"), int) and component["id"] > 0:
            continue
        while next_id in taken:
            next_id += 1
        component["id"] = next_id
        taken.add(next_id)
    return numbered


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (the first chunk of every PNG)."""
    if len(data) >= 24 and data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return None


def _option_payload(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):  # a raw option, e.g. {"type": 8, "value": "<role id>"}
        if "type" not in value:
            raise TypeError(
                f"option {name}: a raw option needs a 'type'; attachments must come from"
                " FakeDiscord.add_attachment()"
            )
        return {"name": name, **value}
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return {"name": name, "type": 5, "value": value}
    if isinstance(value, int):
        return {"name": name, "type": 4, "value": value}
    if isinstance(value, float):
        return {"name": name, "type": 10, "value": value}
    if isinstance(value, str):
        return {"name": name, "type": 3, "value": value}
    raise TypeError(f"cannot infer a Discord option type for {name}={value!r}")


# --------------------------------------------------------------------------- the fake


class FakeDiscord:
    """Fake Discord service. ``start()`` it, point discord.py at it, ``stop()`` it.

    ``owner_id`` owns the application (``GET /oauth2/applications/@me``, so discord.py's
    ``Bot.is_owner``); ``guild_owner_id`` owns the fake's guild (``Guild.owner_id``) and is a
    different user by default. Both are plain users of the fake: ``dm_channel_id(owner_id)``
    finds the DM channel the bot opens with the owner.
    """

    def __init__(
        self,
        *,
        application_id: int = DEFAULT_APPLICATION_ID,
        bot_user_id: int | None = None,
        guild_id: int = DEFAULT_GUILD_ID,
        channel_id: int = DEFAULT_CHANNEL_ID,
        owner_id: int = DEFAULT_OWNER_ID,
        guild_owner_id: int = DEFAULT_GUILD_OWNER_ID,
        token: str = "fake-bot-token",
        team_member_ids: list[int] | None = None,
        bot_username: str = "imagine-bot",
        enforce_webhook_rate_limit: bool = True,
        allow_privileged_intents: bool = False,
    ) -> None:
        self.application_id = application_id
        # Modern applications share one id with their bot user.
        self.bot_user_id = application_id if bot_user_id is None else bot_user_id
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.owner_id = owner_id
        self.guild_owner_id = guild_owner_id
        # A team-owned application (``owner_id`` is then the team's owner and first member).
        self.team_member_ids = list(team_member_ids or [])
        self.token = token
        self.bot_username = bot_username
        self.enforce_webhook_rate_limit = enforce_webhook_rate_limit
        self.allow_privileged_intents = allow_privileged_intents
        # Per-file limit for channel/DM uploads; interactions carry their own limit.
        self.upload_limit = DEFAULT_UPLOAD_LIMIT

        self.api_base = ""
        self.gateway_url = ""
        self.http_base = ""

        self.requests: list[RecordedRequest] = []
        self.identify_count = 0
        self.resume_count = 0
        self.gateway_connections = 0
        self.gateway_received: list[dict[str, Any]] = []
        self.synced_commands: dict[int | None, list[dict[str, Any]]] = {}
        self.command_puts = 0
        self.channel_messages: dict[int, list[dict[str, Any]]] = {}
        self.rate_limited_responses = 0

        self._runner: web.AppRunner | None = None
        self._routes = self._build_routes()
        self._faults: list[_Fault] = []
        self._windows: dict[str, _Window] = {}
        self._waiters: list[
            tuple[Callable[[RecordedRequest], bool], asyncio.Future[RecordedRequest]]
        ] = []
        self._state_changed = asyncio.Condition()
        self._snowflake_counter = 0

        self._users: dict[int, dict[str, Any]] = {}
        self._remember_user(owner_id, "owner")
        if guild_owner_id != owner_id:
            self._remember_user(guild_owner_id, "guild-owner")
        self._roles: dict[int, dict[str, Any]] = {}  # role id -> role, without @everyone
        self._interactions: dict[str, _InteractionState] = {}
        self._messages: dict[int, dict[str, Any]] = {}
        self._attachment_data: dict[int, bytes] = {}
        self._attachment_types: dict[int, str] = {}  # content types given to add_attachment
        # Attachment objects handed out by add_attachment, by id: usable as option values.
        self._option_attachments: dict[str, dict[str, Any]] = {}
        self._dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self._dm_recipients: dict[int, int] = {}  # DM channel id -> user id
        # More channels of the guild: text channels and threads (``add_channel``/``add_thread``).
        self._extra_channels: dict[int, dict[str, Any]] = {}

        self._sessions: dict[str, _GatewaySession] = {}
        self._current_session: _GatewaySession | None = None
        self._conns: set[_GatewayConn] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", API_PREFIX + "{tail:.*}", self._handle_api)
        app.router.add_get(GATEWAY_PATH, self._handle_gateway)
        app.router.add_get(CDN_PREFIX + "/{channel}/{attachment}/{filename}", self._handle_cdn)
        app.router.add_get(
            EPHEMERAL_CDN_PREFIX + "/{owner}/{attachment}/{filename}", self._handle_cdn
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.http_base = f"http://127.0.0.1:{port}"
        self.api_base = self.http_base + API_PREFIX
        self.gateway_url = f"ws://127.0.0.1:{port}{GATEWAY_PATH}"

    async def stop(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"fake stopping"), 2)
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ------------------------------------------------------------------ waiting helpers

    async def _wait_state(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        async with self._state_changed:
            try:
                await asyncio.wait_for(self._state_changed.wait_for(predicate), timeout)
            except TimeoutError as exc:
                raise TimeoutError(f"FakeDiscord: no {what} within {timeout}s") from exc

    async def _notify_state(self) -> None:
        async with self._state_changed:
            self._state_changed.notify_all()

    async def wait_until_ready(self, timeout: float = 10) -> None:
        """Wait until a client identified, got READY + GUILD_CREATE, and is still connected.

        After a bot is closed (and its ``start()`` task awaited) this waits for the next
        client's IDENTIFY, so it also serves restart tests.
        """

        def connected() -> bool:
            session = self._current_session
            return session is not None and session.conn is not None

        await self._wait_state(connected, timeout, "connected READY session")

    async def wait_until_resumed(self, count: int = 1, timeout: float = 10) -> None:
        """Wait until ``resume_count`` reaches ``count``."""
        await self._wait_state(lambda: self.resume_count >= count, timeout, f"RESUME #{count}")

    async def wait_for_request(
        self,
        predicate: Callable[[RecordedRequest], bool],
        timeout: float = 10,
    ) -> RecordedRequest:
        """First recorded request matching ``predicate``, already received or still to come."""
        for rec in self.requests:
            if predicate(rec):
                return rec
        future: asyncio.Future[RecordedRequest] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            seen = "\n".join(f"  {r.status} {r.method} {r.path}" for r in self.requests)
            raise TimeoutError(
                f"FakeDiscord: no matching request within {timeout}s; received:\n{seen}"
            ) from exc
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _notify_waiters(self, rec: RecordedRequest) -> None:
        for predicate, future in list(self._waiters):
            if future.done():
                continue
            try:
                if predicate(rec):
                    future.set_result(rec)
            except Exception as exc:
                future.set_exception(exc)

    # ------------------------------------------------------------------ queries for tests

    def calls_for(self, interaction: FakeInteraction) -> list[RecordedRequest]:
        """Requests whose path contains the interaction's token or id."""
        return [
            r for r in self.requests if interaction.token in r.path or str(interaction.id) in r.path
        ]

    def original_message(self, interaction: FakeInteraction) -> dict[str, Any] | None:
        state = self._interactions.get(interaction.token)
        if state is None or state.original_id is None:
            return None
        message = self._messages.get(state.original_id)
        return None if message is None else copy.deepcopy(message)

    def followups(self, interaction: FakeInteraction) -> list[dict[str, Any]]:
        state = self._interactions.get(interaction.token)
        if state is None:
            return []
        return [copy.deepcopy(self._messages[i]) for i in state.followup_ids if i in self._messages]

    def ack_latency(self, interaction: FakeInteraction) -> float | None:
        """Seconds from dispatching the interaction to its first callback (None if none yet)."""
        state = self._interactions.get(interaction.token)
        if state is None or state.callback_at is None:
            return None
        return state.callback_at - state.dispatched_at

    def attachment_bytes(self, attachment_id: int | str) -> bytes:
        """The bytes stored for an attachment the bot uploaded (or a test added)."""
        return self._attachment_data[int(attachment_id)]

    def message(self, message_id: int | str) -> dict[str, Any] | None:
        """Any message the fake holds (channel, DM, interaction response, followup), or None."""
        message = self._messages.get(int(message_id))
        return None if message is None else copy.deepcopy(message)

    def add_attachment(
        self, data: bytes, filename: str, content_type: str | None = None
    ) -> dict[str, Any]:
        """Store a user's upload and return its attachment object for a slash-command option.

        The object is what Discord puts in ``data.resolved.attachments[<id>]``: ``id``,
        ``filename``, ``size``, ``url`` / ``proxy_url`` (served by the fake CDN under
        ``/ephemeral-attachments/``), ``content_type`` when given, ``width`` / ``height`` for
        a PNG, and ``ephemeral: true`` (option uploads are never posted in the channel).

        Pass the returned dict as an option value, ``send_interaction("cmd", {"image": att})``:
        the option becomes ``{"type": 11, "value": "<id>"}`` and the object is added to
        ``resolved.attachments``, as Discord does. Call after ``start()`` (the URL needs it).
        """
        if not self.http_base:
            raise RuntimeError("FakeDiscord.add_attachment: start() the fake first")
        attachment_id = self._snowflake()
        self._attachment_data[attachment_id] = bytes(data)
        url = (
            f"{self.http_base}{EPHEMERAL_CDN_PREFIX}/{self.application_id}"
            f"/{attachment_id}/{filename}"
        )
        attachment: dict[str, Any] = {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
        }
        if content_type is not None:
            attachment["content_type"] = content_type
            self._attachment_types[attachment_id] = content_type
        size = _png_size(data)
        if size is not None:
            attachment["width"], attachment["height"] = size
        attachment["ephemeral"] = True
        self._option_attachments[attachment["id"]] = attachment
        return copy.deepcopy(attachment)

    def resolved_roles(self, *role_ids: int) -> dict[str, Any]:
        """``resolved`` for role options: ``{"roles": {id: role}}`` as Discord sends it.

        Use with a raw option, e.g. ``send_interaction("cmd", {"role": {"type": 8,
        "value": str(role_id)}}, resolved=fake.resolved_roles(role_id))``. The @everyone
        role is the guild's id.
        """
        return {"roles": {str(role_id): self._role(role_id) for role_id in role_ids}}

    async def add_role(
        self,
        name: str,
        *,
        permissions: int = 0,
        position: int | None = None,
        color: int = 0,
        hoist: bool = False,
        mentionable: bool = False,
    ) -> int:
        """Create a role in the fake's guild and return its id.

        It is part of every later GUILD_CREATE; a client already connected also gets
        GUILD_ROLE_CREATE, so discord.py's cache knows it (``Member.roles`` drops ids the
        cache does not know). ``position`` defaults to above every existing role.
        """
        role_id = self._snowflake()
        if position is None:
            position = max((r["position"] for r in self._roles.values()), default=0) + 1
        self._roles[role_id] = self._role_payload(
            role_id,
            name,
            permissions=permissions,
            position=position,
            color=color,
            hoist=hoist,
            mentionable=mentionable,
        )
        session = self._current_session
        if session is not None:
            event = {"guild_id": str(self.guild_id), "role": self._role(role_id)}
            await self._dispatch(session, "GUILD_ROLE_CREATE", event)
        return role_id

    def dm_channel_id(self, user_id: int) -> int:
        """The DM channel id between the bot and ``user_id`` (created on first use)."""
        channel_id = self._dm_channels.get(user_id)
        if channel_id is None:
            channel_id = self._snowflake()
            self._dm_channels[user_id] = channel_id
            self._dm_recipients[channel_id] = user_id
        return channel_id

    # ------------------------------------------------------------------ fault injection

    def rate_limit_next(
        self,
        method: str,
        path_contains: str,
        *,
        retry_after: float = 0.05,
        count: int = 1,
        is_global: bool = False,
    ) -> None:
        """Answer the next ``count`` matching requests with a retryable 429."""
        self._faults.append(
            _Fault(
                method.upper(),
                path_contains,
                count,
                lambda: self._rate_limited_reply(retry_after, is_global=is_global),
            )
        )

    def fail_next(
        self,
        method: str,
        path_contains: str,
        *,
        status: int,
        code: int,
        message: str = "",
        count: int = 1,
    ) -> None:
        """Answer the next ``count`` matching requests with a JSON error."""
        body = {"code": code, "message": message or f"{status} error"}
        self._faults.append(
            _Fault(method.upper(), path_contains, count, lambda: _Reply(status, dict(body)))
        )

    def drop_next(self, method: str, path_contains: str, *, count: int = 1) -> None:
        """Close the connection on the next ``count`` matching requests, without answering
        (recorded with status 0), as a network fault would."""
        self._faults.append(
            _Fault(method.upper(), path_contains, count, lambda: _Reply(_DROPPED_STATUS))
        )

    def expire_token(self, interaction: FakeInteraction) -> None:
        """From now on, webhook and callback calls with this token answer 401 / 50027."""
        self._interactions[interaction.token].revoked = True

    def _take_fault(self, rec: RecordedRequest) -> _Reply | None:
        for fault in self._faults:
            if fault.method in (rec.method, "*") and fault.path_contains in rec.path:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault.reply()
        return None

    def _rate_limited_reply(self, retry_after: float, *, is_global: bool) -> _Reply:
        # discord.py retries a 429 only if it carries a Via header and a JSON retry_after.
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Limit": "1",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Scope": "global" if is_global else "user",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
        }
        return _Reply(429, body, headers)

    # ------------------------------------------------------------------ ids and objects

    def _snowflake(self, moment: dt.datetime | None = None) -> int:
        # time_snowflake leaves the low 22 bits zero; a counter there keeps ids unique.
        self._snowflake_counter = (self._snowflake_counter + 1) % 4096
        return discord.utils.time_snowflake(moment or _now()) + self._snowflake_counter

    def _bot_user(self, *, full: bool = False) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": str(self.bot_user_id),
            "username": self.bot_username,
            "discriminator": "0",
            "global_name": self.bot_username,
            "avatar": None,
            "bot": True,
            "public_flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }
        if full:
            user.update(
                verified=True,
                mfa_enabled=False,
                flags=0,
                locale="en-US",
                email=None,
                premium_type=0,
            )
        return user

    def _remember_user(self, user_id: int, username: str) -> dict[str, Any]:
        user = {
            "id": str(user_id),
            "username": username,
            "discriminator": "0",
            "global_name": username,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }
        self._users[user_id] = user
        return copy.deepcopy(user)

    def _user(self, user_id: int) -> dict[str, Any]:
        if user_id == self.bot_user_id:
            return self._bot_user()
        known = self._users.get(user_id)
        return copy.deepcopy(known) if known else self._remember_user(user_id, f"user{user_id}")

    def _owner(self) -> dict[str, Any]:
        return self._user(self.owner_id)

    def _application(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_username,
            "icon": None,
            "description": "Fake application for tests",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "owner": self._owner(),
            "team": self._team(),
            "flags": 0,
            "tags": [],
            "redirect_uris": [],
            # Must stay None: with an endpoint URL Discord stops sending gateway interactions.
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "approximate_guild_count": 1,
            "bot": self._bot_user(),
            "integration_types_config": {"0": {}},
        }

    def _team(self) -> dict[str, Any] | None:
        if not self.team_member_ids:
            return None
        team_id = str(self.application_id + 7)
        return {
            "id": team_id,
            "name": "Fake team",
            "icon": None,
            "owner_user_id": str(self.owner_id),
            "members": [
                {
                    "user": self._user(member),
                    "membership_state": 2,
                    "team_id": team_id,
                    "permissions": ["*"],
                    "role": "admin" if member == self.owner_id else "read_only",
                }
                for member in self.team_member_ids
            ],
        }

    def add_channel(self, name: str = "channel", *, nsfw: bool = False) -> int:
        """Another text channel of the guild; ``nsfw`` marks it age-restricted. Channels added
        before the client is READY arrive with GUILD_CREATE; later ones only in interactions
        and from ``GET /channels/{id}``, as for a client whose cache missed them."""
        channel_id = self._snowflake()
        self._extra_channels[channel_id] = {
            **self._guild_channel(),
            "id": str(channel_id),
            "name": name,
            "nsfw": nsfw,
        }
        return channel_id

    def add_thread(self, parent_id: int, name: str = "thread") -> int:
        """A public thread in ``parent_id`` (the fake's channel or one from ``add_channel``)."""
        self._channel(parent_id)
        thread_id = self._snowflake()
        self._extra_channels[thread_id] = {
            "id": str(thread_id),
            "type": 11,
            "guild_id": str(self.guild_id),
            "parent_id": str(parent_id),
            "owner_id": str(self.bot_user_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _iso(_now()),
                "locked": False,
            },
        }
        return thread_id

    def _guild_channel(self) -> dict[str, Any]:
        return {
            "id": str(self.channel_id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "topic": None,
            "parent_id": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def _dm_channel(self, channel_id: int) -> dict[str, Any]:
        return {
            "id": str(channel_id),
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [self._user(self._dm_recipients[channel_id])],
        }

    def _channel(self, channel_id: int) -> dict[str, Any]:
        if channel_id == self.channel_id:
            return self._guild_channel()
        if channel_id in self._extra_channels:
            return copy.deepcopy(self._extra_channels[channel_id])
        if channel_id in self._dm_recipients:
            return self._dm_channel(channel_id)
        raise _ApiError(404, 10003, "Unknown Channel")

    @staticmethod
    def _role_payload(
        role_id: int,
        name: str,
        *,
        permissions: int,
        position: int,
        color: int = 0,
        hoist: bool = False,
        mentionable: bool = False,
    ) -> dict[str, Any]:
        return {
            "id": str(role_id),
            "name": name,
            "permissions": str(permissions),
            "position": position,
            "color": color,
            "colors": {"primary_color": color, "secondary_color": None, "tertiary_color": None},
            "hoist": hoist,
            "managed": False,
            "mentionable": mentionable,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }

    def _role(self, role_id: int) -> dict[str, Any]:
        if role_id == self.guild_id:  # @everyone shares the guild's id
            return self._role_payload(
                role_id, "@everyone", permissions=_EVERYONE_PERMISSIONS, position=0
            )
        role = self._roles.get(role_id)
        if role is None:
            raise ValueError(f"FakeDiscord: no role {role_id} in the guild (add_role first)")
        return copy.deepcopy(role)

    def _member_permissions(self, user_id: int, roles: list[int]) -> str:
        """What Discord computes for ``member.permissions`` (no channel overwrites here)."""
        if user_id == self.guild_owner_id:
            return str(_ALL_PERMISSIONS)
        value = _EVERYONE_PERMISSIONS
        for role_id in roles:
            value |= int(self._role(role_id)["permissions"])
        return str(_ALL_PERMISSIONS if value & _ADMINISTRATOR else value)

    def _guild_create(self) -> dict[str, Any]:
        joined = _iso(_now())
        return {
            "id": str(self.guild_id),
            "name": "Fake Guild",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.guild_owner_id),
            "application_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": str(self.channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "max_members": 500_000,
            "features": [],
            "roles": [self._role(self.guild_id), *(self._role(r) for r in self._roles)],
            "emojis": [],
            "stickers": [],
            "joined_at": joined,
            "large": False,
            "unavailable": False,
            "lazy": True,
            "member_count": 1,
            "members": [
                {
                    "user": self._bot_user(),
                    "roles": [],
                    "joined_at": joined,
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                    "pending": False,
                    "premium_since": None,
                    "nick": None,
                    "avatar": None,
                }
            ],
            "channels": [
                self._guild_channel(),
                *(c for c in self._extra_channels.values() if c["type"] != 11),
            ],
            "threads": [c for c in self._extra_channels.values() if c["type"] == 11],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _new_message(
        self,
        *,
        channel_id: int,
        fields: dict[str, Any],
        flags: int,
        message_type: int,
        interaction: _InteractionState | None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": str(self._snowflake()),
            "type": message_type,
            "channel_id": str(channel_id),
            "author": self._bot_user(),
            "content": "",
            "embeds": [],
            "components": [],
            "attachments": [],
            "tts": False,
            "timestamp": _iso(_now()),
            "edited_timestamp": None,
            "flags": flags,
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
        }
        message.update(fields)
        if interaction is not None:
            info = interaction.info
            owners = {"0": str(info.guild_id or 0)}
            message["webhook_id"] = str(self.application_id)
            message["application_id"] = str(self.application_id)
            metadata: dict[str, Any] = {
                "id": str(info.id),
                "type": interaction.kind,
                "user": copy.deepcopy(interaction.user),
                "authorizing_integration_owners": owners,
            }
            if interaction.kind == MESSAGE_COMPONENT:
                metadata["interacted_message_id"] = str(info.message_id)
            else:
                metadata["name"] = interaction.name
            message["interaction_metadata"] = metadata
            if interaction.original_id is not None:
                message["interaction_metadata"]["original_response_message_id"] = str(
                    interaction.original_id
                )
        self._messages[int(message["id"])] = message
        return message

    def _attachments(
        self,
        existing: list[dict[str, Any]],
        requested: list[dict[str, Any]] | None,
        files: list[RecordedFile],
        channel_id: int,
    ) -> list[dict[str, Any]]:
        """Attachments after a create/edit: kept ones (by id) plus uploaded ``files[n]``."""
        by_index: dict[int, RecordedFile] = {}
        for position, upload in enumerate(files):
            match = _FILE_FIELD.match(upload.field_name)
            by_index[int(match.group(1)) if match else position] = upload

        def upload_attachment(upload: RecordedFile, meta: dict[str, Any]) -> dict[str, Any]:
            attachment_id = self._snowflake()
            filename = meta.get("filename") or upload.filename
            self._attachment_data[attachment_id] = upload.data
            url = f"{self.http_base}{CDN_PREFIX}/{channel_id}/{attachment_id}/{filename}"
            attachment = {
                "id": str(attachment_id),
                "filename": filename,
                "size": len(upload.data),
                "url": url,
                "proxy_url": url,
                "content_type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
            }
            size = _png_size(upload.data)
            if size is not None:
                attachment["width"], attachment["height"] = size
            if meta.get("description"):
                attachment["description"] = meta["description"]
            return attachment

        if requested is None:  # no "attachments" key: keep everything, append uploads
            return [*copy.deepcopy(existing), *(upload_attachment(f, {}) for f in files)]
        kept = {a["id"]: a for a in existing}
        result: list[dict[str, Any]] = []
        used: set[int] = set()
        problems: list[_Problem] = []
        for index, meta in enumerate(requested):
            ref = str(meta.get("id"))
            if ref in kept:
                result.append(
                    {**kept[ref], **{k: v for k, v in meta.items() if k == "description"}}
                )
            elif ref.isdigit() and int(ref) in by_index:
                used.add(int(ref))
                result.append(upload_attachment(by_index[int(ref)], meta))
            else:
                problems.append((("attachments", index, "id"), "ATTACHMENT_NOT_FOUND", "Unknown"))
        if problems:
            raise _form_error(problems)
        result += [upload_attachment(f, {}) for i, f in by_index.items() if i not in used]
        return result

    def _compose(
        self,
        base: dict[str, Any] | None,
        payload: dict[str, Any],
        files: list[RecordedFile],
        *,
        limit: int,
        channel_id: int,
    ) -> dict[str, Any]:
        """Validated message fields after applying ``payload`` to ``base`` (not mutated)."""
        if not isinstance(payload, dict):
            raise _form_error([((), "DICT_TYPE_CONVERT", "Only dictionaries may be used")])
        flags = payload.get("flags") if "flags" in payload else (base or {}).get("flags")
        v2 = bool(int(flags or 0) & IS_COMPONENTS_V2)
        problems = _message_problems(payload) + _component_problems(
            payload.get("components"), v2=v2
        )
        if problems:
            raise _form_error(problems)
        if any(len(upload.data) > limit for upload in files):
            raise _ApiError(413, 40005, "Request entity too large")
        current = base or {}
        fields: dict[str, Any] = {
            key: copy.deepcopy(current.get(key, []))
            for key in ("embeds", "components", "attachments")
        }
        fields["content"] = current.get("content", "")
        if "content" in payload:
            fields["content"] = payload["content"] or ""
        if "embeds" in payload:
            fields["embeds"] = [{"type": "rich", **e} for e in payload["embeds"] or []]
        if "components" in payload:
            # Stored and returned with the ids Discord gives every component.
            fields["components"] = _numbered_components(payload["components"] or [])
        if "tts" in payload and base is None:
            fields["tts"] = bool(payload["tts"])
        if "message_reference" in payload and base is None:
            fields["message_reference"] = payload["message_reference"]
        requested = (payload.get("attachments") or []) if "attachments" in payload else None
        fields["attachments"] = self._attachments(
            fields["attachments"], requested, files, channel_id
        )
        if not any(fields[k] for k in ("content", "embeds", "components", "attachments")):
            raise _ApiError(400, 50006, "Cannot send an empty message")
        return fields

    def _forget_message(self, message: dict[str, Any]) -> None:
        """Delete a message wherever the fake keeps it."""
        self._messages.pop(int(message["id"]), None)
        channel_messages = self.channel_messages.get(int(message["channel_id"]), [])
        if message in channel_messages:
            channel_messages.remove(message)

    def _commit_edit(self, message: dict[str, Any], fields: dict[str, Any], flags: Any) -> None:
        message.update(fields)
        if flags is not None:
            message["flags"] = (message["flags"] & ~_EDIT_FLAGS) | (int(flags) & _EDIT_FLAGS)
        message["flags"] &= ~LOADING
        message["edited_timestamp"] = _iso(_now())

    # ------------------------------------------------------------------ REST plumbing

    def _build_routes(self) -> list[_Route]:
        snowflake = r"(?P<{}>\d+)"
        app = snowflake.format("app_id")
        token = r"(?P<token>[^/]+)"
        webhook = rf"/webhooks/{app}/{token}"
        message = webhook + r"/messages/(?P<message>@original|\d+)"
        channel = "/channels/" + snowflake.format("channel_id")
        channel_message = channel + "/messages/" + snowflake.format("message_id")
        table: list[tuple[str, str, _Handler, bool, bool]] = [
            ("GET", "/users/@me", self._get_me, True, False),
            ("POST", "/users/@me/channels", self._create_dm, True, False),
            ("GET", "/users/" + snowflake.format("user_id"), self._get_user, True, False),
            ("GET", "/oauth2/applications/@me", self._get_application, True, False),
            ("GET", "/applications/@me", self._get_application, True, False),
            ("GET", "/gateway", self._get_gateway, False, False),
            ("GET", "/gateway/bot", self._get_gateway_bot, True, False),
            ("GET", f"/applications/{app}/commands", self._get_commands, True, False),
            ("PUT", f"/applications/{app}/commands", self._put_commands, True, False),
            (
                "GET",
                f"/applications/{app}/guilds/" + snowflake.format("guild_id") + "/commands",
                self._get_commands,
                True,
                False,
            ),
            (
                "PUT",
                f"/applications/{app}/guilds/" + snowflake.format("guild_id") + "/commands",
                self._put_commands,
                True,
                False,
            ),
            (
                "POST",
                "/interactions/" + snowflake.format("interaction_id") + f"/{token}/callback",
                self._callback,
                False,
                False,
            ),
            ("POST", webhook, self._create_followup, False, True),
            ("GET", message, self._get_webhook_message, False, True),
            ("PATCH", message, self._edit_webhook_message, False, True),
            ("DELETE", message, self._delete_webhook_message, False, True),
            ("GET", channel, self._get_channel, True, False),
            ("POST", channel + "/messages", self._create_channel_message, True, False),
            ("GET", channel_message, self._get_channel_message, True, False),
            ("PATCH", channel_message, self._edit_channel_message, True, False),
            ("DELETE", channel_message, self._delete_channel_message, True, False),
        ]
        return [
            _Route(method, re.compile(pattern), handler, auth, bucket)
            for method, pattern, handler, auth, bucket in table
        ]

    def _match(self, method: str, path: str) -> tuple[_Route | None, re.Match[str] | None]:
        for route in self._routes:
            if route.method == method and (match := route.pattern.fullmatch(path)):
                return route, match
        return None, None

    async def _read_body(self, request: web.Request) -> tuple[Any, list[RecordedFile], bool]:
        """Parsed JSON (or multipart payload_json), uploaded files, and whether JSON was bad."""
        if request.content_type == "multipart/form-data":
            payload: Any = None
            files: list[RecordedFile] = []
            bad = False
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                data = bytes(await part.read())
                if part.name == "payload_json":
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        bad = True
                else:
                    files.append(
                        RecordedFile(
                            field_name=part.name or "",
                            filename=part.filename or "",
                            content_type=part.headers.get("Content-Type"),
                            data=data,
                        )
                    )
            return payload, files, bad
        raw = await request.read()
        if not raw:
            return None, [], False
        try:
            return json.loads(raw), [], False
        except ValueError:
            return None, [], True

    def _generic_headers(self, method: str, route: _Route | None) -> dict[str, str]:
        key = f"{method} {route.pattern.pattern if route else 'unknown'}"
        return {
            "X-RateLimit-Limit": str(GENERIC_BUCKET_LIMIT),
            "X-RateLimit-Remaining": str(GENERIC_BUCKET_LIMIT - 1),
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": hashlib.sha1(key.encode()).hexdigest()[:32],
        }

    def _webhook_bucket(self, token: str) -> tuple[dict[str, str], _Reply | None]:
        """Per-token bucket of interaction webhooks: 5 requests per 2 s, then a real 429."""
        now = time.monotonic()
        window = self._windows.get(token)
        if window is None or now - window.started >= WEBHOOK_BUCKET_WINDOW:
            window = self._windows[token] = _Window(now)
        reset_after = max(0.0, window.started + WEBHOOK_BUCKET_WINDOW - now)
        if window.used >= WEBHOOK_BUCKET_LIMIT:
            # Never 0: discord.py would spin through its 5 attempts before the window ends.
            retry_after = max(round(reset_after, 3), 0.01)
            return {}, self._rate_limited_reply(retry_after, is_global=False)
        window.used += 1
        headers = {
            "X-RateLimit-Limit": str(WEBHOOK_BUCKET_LIMIT),
            "X-RateLimit-Remaining": str(WEBHOOK_BUCKET_LIMIT - window.used),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(b"interaction-webhook").hexdigest()[:32],
        }
        return headers, None

    def _answer(
        self,
        rec: RecordedRequest,
        route: _Route | None,
        match: re.Match[str] | None,
        bad_json: bool,
    ) -> _Reply:
        fault = self._take_fault(rec)
        if fault is not None:
            return fault
        headers = self._generic_headers(rec.method, route)
        try:
            if route is None or match is None:
                raise _ApiError(404, 0, "404: Not Found")
            if route.bot_auth and rec.headers.get("authorization") != f"Bot {self.token}":
                raise _ApiError(401, 0, "401: Unauthorized")
            if bad_json:
                raise _ApiError(400, 50109, "The request body contains invalid JSON.")
            if route.webhook_bucket and self.enforce_webhook_rate_limit:
                headers, limited = self._webhook_bucket(match["token"])
                if limited is not None:
                    return limited
            reply = route.handler(rec, match)
        except _ApiError as exc:
            reply = _Reply(exc.status, exc.body)
        reply.headers = {**headers, **reply.headers}
        return reply

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        path = request.path[len(API_PREFIX) :] or "/"
        payload, files, bad_json = await self._read_body(request)
        rec = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query.items()),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=payload,
            files=files,
            status=0,
            at=received,
        )
        route, match = self._match(rec.method, path)
        reply = self._answer(rec, route, match, bad_json)
        rec.status = reply.status
        if reply.status == 429:
            self.rate_limited_responses += 1
        if reply.status == _DROPPED_STATUS:
            rec.status = 0
            self.requests.append(rec)
            self._notify_waiters(rec)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client
        self.requests.append(rec)
        self._notify_waiters(rec)
        if reply.body is None:
            return web.Response(status=reply.status, headers=reply.headers)
        # Exactly "application/json": discord.py treats anything else (even "; charset=utf-8",
        # which web.json_response adds) as text and then fails on it.
        headers = {**reply.headers, "Content-Type": "application/json"}
        return web.Response(
            status=reply.status, body=json.dumps(reply.body).encode(), headers=headers
        )

    async def _handle_cdn(self, request: web.Request) -> web.StreamResponse:
        attachment_id = int(request.match_info["attachment"])
        data = self._attachment_data.get(attachment_id)
        if data is None:
            return web.Response(status=404)
        filename = request.match_info["filename"]
        ctype = self._attachment_types.get(attachment_id) or (
            mimetypes.guess_type(filename)[0] or "application/octet-stream"
        )
        return web.Response(body=data, headers={"Content-Type": ctype})

    # ------------------------------------------------------------------ REST handlers

    def _get_me(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        return _Reply(200, self._bot_user(full=True))

    def _get_user(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        user_id = int(m["user_id"])
        if user_id != self.bot_user_id and user_id not in self._users:
            raise _ApiError(404, 10013, "Unknown User")
        return _Reply(200, self._user(user_id))

    def _get_application(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        return _Reply(200, self._application())

    def _get_gateway(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        return _Reply(200, {"url": self.gateway_url})

    def _get_gateway_bot(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}
        return _Reply(200, {"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    def _command_scope(self, m: re.Match[str]) -> int | None:
        if int(m["app_id"]) != self.application_id:
            raise _ApiError(403, 50001, "Missing Access")
        guild = m.groupdict().get("guild_id")
        # Any guild id is accepted: a development guild need not be the fake's own guild.
        return None if guild is None else int(guild)

    def _get_commands(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        scope = self._command_scope(m)
        return _Reply(200, copy.deepcopy(self.synced_commands.get(scope, [])))

    def _put_commands(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        scope = self._command_scope(m)
        if not isinstance(rec.json, list):
            raise _form_error([((), "BASE_TYPE_ARRAY", "Must be an array")])
        problems = _command_problems(rec.json)
        if problems:
            raise _form_error(problems)
        # Discord keeps the id of a command that already existed under the same name and type.
        previous = {(c["name"], c["type"]): c for c in self.synced_commands.get(scope, [])}
        stored = []
        for command in rec.json:
            ctype = command.get("type", 1)
            old = previous.get((command["name"], ctype))
            entry = copy.deepcopy(command)
            permissions = command.get("default_member_permissions")
            entry.update(
                id=old["id"] if old else str(self._snowflake()),
                application_id=str(self.application_id),
                version=str(self._snowflake()),
                type=ctype,
                description=command.get("description") or "",
                default_member_permissions=None if permissions is None else str(permissions),
                nsfw=command.get("nsfw", False),
            )
            if scope is not None:
                entry["guild_id"] = str(scope)
            stored.append(entry)
        self.synced_commands[scope] = stored
        self.command_puts += 1
        return _Reply(200, copy.deepcopy(stored))

    def _callback(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        state = self._interactions.get(m["token"])
        if state is None or state.info.id != int(m["interaction_id"]):
            raise _ApiError(404, 10062, "Unknown interaction")
        if state.revoked:
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        # The 3 s acknowledgement deadline is not enforced (slow CI); ack_latency() reports it.
        if _now() >= discord.utils.snowflake_time(state.info.id) + TOKEN_LIFETIME:
            raise _ApiError(404, 10062, "Unknown interaction")
        if state.callback_type is not None:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = rec.json if isinstance(rec.json, dict) else {}
        ctype = body.get("type")
        data = body.get("data") or {}
        flags = int(data.get("flags") or 0)
        channel_id = state.info.channel_id
        limit = state.attachment_size_limit
        component = state.kind == MESSAGE_COMPONENT
        message: dict[str, Any] | None = None
        if ctype in (4, 5):
            if ctype == 5:
                fields: dict[str, Any] = {}
                flags = LOADING | (flags & EPHEMERAL)
            else:
                fields = self._compose(None, data, rec.files, limit=limit, channel_id=channel_id)
                flags &= _CREATE_FLAGS
            message_type = 20  # CHAT_INPUT_COMMAND
            if component:
                # An answer to a button press is a reply to the message the button is on.
                message_type = 19
                fields["message_reference"] = self._reference(state)
            message = self._new_message(
                channel_id=channel_id,
                fields=fields,
                flags=flags,
                message_type=message_type,
                interaction=state,
            )
            state.original_pending = ctype == 5
        elif ctype in (6, 7) and component:
            # DEFERRED_UPDATE_MESSAGE / UPDATE_MESSAGE: no new message; @original is now the
            # message the button is on.
            message = self._messages.get(state.info.message_id or 0)
            if message is None:
                raise _ApiError(404, 10008, "Unknown Message")
            if ctype == 7:
                fields = self._compose(message, data, rec.files, limit=limit, channel_id=channel_id)
                self._commit_edit(message, fields, data.get("flags"))
        elif ctype != 9:  # 9 = modal; 6/7 only answer components, 8 only autocomplete
            raise _form_error(
                [(("type",), "INTERACTION_CALLBACK_TYPE_INVALID", f"Invalid callback type {ctype}")]
            )
        state.callback_type = ctype
        state.callback_at = rec.at
        interaction: dict[str, Any] = {"id": str(state.info.id), "type": state.kind}
        resource: dict[str, Any] = {"type": ctype}
        if message is not None:
            state.original_id = int(message["id"])
            interaction.update(
                response_message_id=message["id"],
                response_message_loading=bool(message["flags"] & LOADING),
                response_message_ephemeral=bool(message["flags"] & EPHEMERAL),
            )
            if ctype in (4, 7):
                resource["message"] = copy.deepcopy(message)
        return _Reply(200, {"interaction": interaction, "resource": resource})

    def _reference(self, state: _InteractionState) -> dict[str, Any]:
        """``message_reference`` of a reply to the message a pressed button is on."""
        reference: dict[str, Any] = {
            "type": 0,
            "message_id": str(state.info.message_id),
            "channel_id": str(state.info.channel_id),
        }
        if state.info.guild_id is not None:
            reference["guild_id"] = str(state.info.guild_id)
        return reference

    def _webhook_state(self, m: re.Match[str]) -> _InteractionState:
        if int(m["app_id"]) != self.application_id:
            raise _ApiError(404, 10015, "Unknown Webhook")
        state = self._interactions.get(m["token"])
        if state is None or state.revoked:
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        if _now() >= discord.utils.snowflake_time(state.info.id) + TOKEN_LIFETIME:
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        return state

    def _webhook_message(self, state: _InteractionState, ref: str) -> dict[str, Any]:
        if ref == "@original":
            message_id = state.original_id
        elif int(ref) == state.original_id or int(ref) in state.followup_ids:
            message_id = int(ref)
        else:
            message_id = None
        message = None if message_id is None else self._messages.get(message_id)
        if message is None:
            raise _ApiError(404, 10008, "Unknown Message")
        return message

    def _get_webhook_message(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        state = self._webhook_state(m)
        return _Reply(200, copy.deepcopy(self._webhook_message(state, m["message"])))

    def _edit_webhook_message(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        state = self._webhook_state(m)
        message = self._webhook_message(state, m["message"])
        payload = rec.json if rec.json is not None else {}
        fields = self._compose(
            message,
            payload,
            rec.files,
            limit=state.attachment_size_limit,
            channel_id=state.info.channel_id,
        )
        self._commit_edit(message, fields, payload.get("flags"))
        if int(message["id"]) == state.original_id:
            state.original_pending = False
        return _Reply(200, copy.deepcopy(message))

    def _delete_webhook_message(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        state = self._webhook_state(m)
        message = self._webhook_message(state, m["message"])
        # After a component's type 6/7 callback @original is a channel message: it goes too.
        self._forget_message(message)
        if int(message["id"]) == state.original_id:
            state.original_pending = False
        return _Reply(204)

    def _create_followup(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        state = self._webhook_state(m)
        if state.callback_type is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        payload = rec.json if rec.json is not None else {}
        limit = state.attachment_size_limit
        channel_id = state.info.channel_id
        pending = self._messages.get(state.original_id or 0) if state.original_pending else None
        if pending is not None:
            # Discord: the first followup after a defer edits the loading message instead of
            # creating one, and keeps the defer's ephemeral state.
            fields = self._compose(pending, payload, rec.files, limit=limit, channel_id=channel_id)
            self._commit_edit(pending, fields, None)
            state.original_pending = False
            return _Reply(200, copy.deepcopy(pending))
        fields = self._compose(None, payload, rec.files, limit=limit, channel_id=channel_id)
        message = self._new_message(
            channel_id=channel_id,
            fields=fields,
            flags=int(payload.get("flags") or 0) & _CREATE_FLAGS,
            message_type=0,
            interaction=state,
        )
        state.followup_ids.append(int(message["id"]))
        # Followups always answer with the message, whatever ?wait says.
        return _Reply(200, copy.deepcopy(message))

    def _get_channel(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        return _Reply(200, self._channel(int(m["channel_id"])))

    def _create_dm(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        body = rec.json if isinstance(rec.json, dict) else {}
        recipient = body.get("recipient_id")
        if recipient is None or not str(recipient).isdigit():
            raise _form_error([(("recipient_id",), "BASE_TYPE_REQUIRED", "This field is required")])
        return _Reply(200, self._dm_channel(self.dm_channel_id(int(recipient))))

    def _create_channel_message(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        channel_id = int(m["channel_id"])
        self._channel(channel_id)
        payload = rec.json if rec.json is not None else {}
        nonce = payload.get("nonce")
        if nonce is not None and payload.get("enforce_nonce"):
            # Discord: the same author and nonce within a few minutes returns the first
            # message instead of creating a second one.
            for existing in self.channel_messages.get(channel_id, []):
                if existing.get("nonce") == str(nonce):
                    return _Reply(200, copy.deepcopy(existing))
        fields = self._compose(
            None, payload, rec.files, limit=self.upload_limit, channel_id=channel_id
        )
        message = self._new_message(
            channel_id=channel_id,
            fields=fields,
            flags=int(payload.get("flags") or 0) & _CHANNEL_FLAGS,
            message_type=19 if payload.get("message_reference") else 0,
            interaction=None,
        )
        if nonce is not None:
            message["nonce"] = str(nonce)
        # The list holds the live dicts, so later edits show up in channel_messages too.
        self.channel_messages.setdefault(channel_id, []).append(message)
        return _Reply(200, copy.deepcopy(message))

    def _channel_message(self, m: re.Match[str]) -> dict[str, Any]:
        channel_id = int(m["channel_id"])
        self._channel(channel_id)
        # Any message of the channel, interaction replies included (they are channel messages
        # too, written by the bot's user); ephemeral ones exist only for their recipient.
        message = self._messages.get(int(m["message_id"]))
        if (
            message is None
            or int(message["channel_id"]) != channel_id
            or message["flags"] & EPHEMERAL
        ):
            raise _ApiError(404, 10008, "Unknown Message")
        return message

    def _get_channel_message(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        return _Reply(200, copy.deepcopy(self._channel_message(m)))

    def _edit_channel_message(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        message = self._channel_message(m)
        payload = rec.json if rec.json is not None else {}
        fields = self._compose(
            message,
            payload,
            rec.files,
            limit=self.upload_limit,
            channel_id=int(m["channel_id"]),
        )
        self._commit_edit(message, fields, payload.get("flags"))
        return _Reply(200, copy.deepcopy(message))

    def _delete_channel_message(self, rec: RecordedRequest, m: re.Match[str]) -> _Reply:
        self._forget_message(self._channel_message(m))
        return _Reply(204)

    # ------------------------------------------------------------------ gateway

    async def _handle_gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = _GatewayConn(ws)
        self._conns.add(conn)
        self.gateway_connections += 1
        try:
            hello = {"heartbeat_interval": HEARTBEAT_INTERVAL_MS, "_trace": ["fake-gateway"]}
            await conn.send({"op": 10, "d": hello, "s": None, "t": None})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                self.gateway_received.append(frame)
                await self._on_gateway_frame(conn, frame)
        finally:
            self._conns.discard(conn)
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                # A clean close (1000/1001) ends the session on Discord. (discord.py's
                # Client.close() asks for 1000 but its reader task sends 4000 first.)
                if ws.close_code in (1000, 1001):
                    self._sessions.pop(session.session_id, None)
                    if self._current_session is session:
                        self._current_session = None
            await self._notify_state()
        return ws

    async def _on_gateway_frame(self, conn: _GatewayConn, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        data = frame.get("d")
        if op == 1:  # heartbeat
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif op in (3, 4, 8, 31):  # presence, voice state, member / soundboard requests
            return
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    def _token_ok(self, token: Any) -> bool:
        return isinstance(token, str) and token.removeprefix("Bot ") == self.token

    async def _identify(self, conn: _GatewayConn, data: dict[str, Any]) -> None:
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if not self._token_ok(data.get("token")):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents") or 0)
        if intents & _PRIVILEGED_INTENTS and not self.allow_privileged_intents:
            # Like a fresh application whose privileged intents are off in the portal.
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard")
        if shard is not None and list(shard) != [0, 1]:
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        session = _GatewaySession(session_id=uuid.uuid4().hex, conn=conn)
        conn.session = session
        self._sessions[session.session_id] = session
        self.identify_count += 1
        ready: dict[str, Any] = {
            "v": 10,
            "user": self._bot_user(full=True),
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "_trace": ["fake-gateway"],
        }
        if shard is not None:
            ready["shard"] = [0, 1]
        await self._dispatch(session, "READY", ready)
        await self._dispatch(session, "GUILD_CREATE", self._guild_create())
        self._current_session = session
        await self._notify_state()

    async def _resume(self, conn: _GatewayConn, data: dict[str, Any]) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        if session is None or not self._token_ok(data.get("token")):
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        async with session.lock:
            previous = session.conn
            session.conn = conn
            conn.session = session
            if previous is not None and previous is not conn:
                with contextlib.suppress(Exception):
                    await previous.ws.close(code=4000, message=b"Session resumed elsewhere.")
            last_seen = int(data.get("seq") or 0)
            for payload in session.history:
                if payload["s"] > last_seen:
                    await conn.send(payload)
            session.seq += 1
            resumed = {"op": 0, "t": "RESUMED", "s": session.seq, "d": {"_trace": ["fake"]}}
            session.history.append(resumed)
            await conn.send(resumed)
        self.resume_count += 1
        await self._notify_state()

    async def _dispatch(self, session: _GatewaySession, event: str, data: dict[str, Any]) -> int:
        """Send a dispatch with the session's next sequence number (kept for RESUME)."""
        async with session.lock:
            session.seq += 1
            payload = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.history.append(payload)
            if session.conn is not None:
                await session.conn.send(payload)
            return session.seq

    async def send_message(
        self, content: str, *, user_id: int = DEFAULT_USER_ID, mention_bot: bool = True
    ) -> int:
        """A member's message in the fake's channel (MESSAGE_CREATE), e.g. ``@bot help``."""
        session = self._current_session
        if session is None:
            raise RuntimeError("FakeDiscord: no client is READY yet to receive a message")
        message_id = self._snowflake()
        mentions = [self._bot_user()] if mention_bot else []
        prefix = f"<@{self.bot_user_id}> " if mention_bot else ""
        payload = {
            "id": str(message_id),
            "type": 0,
            "channel_id": str(self.channel_id),
            "guild_id": str(self.guild_id),
            "author": self._user(user_id),
            "member": {"roles": [], "joined_at": _iso(_now()), "deaf": False, "mute": False},
            "content": prefix + content,
            "timestamp": _iso(_now()),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "flags": 0,
            "components": [],
        }
        await self._dispatch(session, "MESSAGE_CREATE", payload)
        return message_id

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the current gateway socket with a resumable code; discord.py will RESUME.

        Dispatches sent until the client resumes are buffered and replayed on RESUME.
        """
        session = self._current_session
        conn = session.conn if session is not None else None
        if session is None or conn is None:
            raise RuntimeError("FakeDiscord.drop_gateway: no connected gateway session")
        async with session.lock:
            session.conn = None
        await conn.ws.close(code=code, message=b"Dropped by the test.")

    # ------------------------------------------------------------------ interactions

    def _find_command(self, name: str, guild_id: int | None) -> dict[str, Any] | None:
        scopes: list[int | None] = [guild_id, None] if guild_id is not None else [None]
        scopes += [s for s in self.synced_commands if s not in scopes]
        for scope in scopes:
            for command in self.synced_commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == 1:
                    return command
        return None

    def _options(
        self, options: dict[str, Any] | None, resolved: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Option payloads, and ``resolved`` with the attachments those options refer to."""
        merged: dict[str, Any] = {}
        payloads: list[dict[str, Any]] = []
        for name, value in (options or {}).items():
            issued = (
                self._option_attachments.get(str(value.get("id")))
                if isinstance(value, dict) and "type" not in value
                else None
            )
            if issued is None:
                payloads.append(_option_payload(name, value))
                continue
            payloads.append({"name": name, "type": 11, "value": issued["id"]})
            merged.setdefault("attachments", {})[issued["id"]] = copy.deepcopy(issued)
        for kind, entries in (resolved or {}).items():
            merged.setdefault(kind, {}).update(copy.deepcopy(entries))
        return payloads, merged

    async def _dispatch_interaction(
        self,
        *,
        kind: int,
        name: str,
        data: dict[str, Any],
        user_id: int,
        username: str,
        guild: int | None,
        channel_id: int,
        attachment_size_limit: int,
        permissions: str | None,
        app_permissions: str,
        roles: list[int] | None,
        created_at: dt.datetime | None,
        message: dict[str, Any] | None = None,
    ) -> FakeInteraction:
        """Build an INTERACTION_CREATE (guild member or DM user parts), register it, send it."""
        session = self._current_session
        if session is None:
            raise RuntimeError("FakeDiscord: no client is READY yet to receive an interaction")
        if roles and guild != self.guild_id:
            raise ValueError("FakeDiscord: roles exist only in the fake's own guild")
        role_ids = list(roles or [])
        for role_id in role_ids:
            self._role(role_id)  # raises for a role the guild does not have
        created = created_at or _now()
        interaction_id = self._snowflake(created)
        token = "aW50ZXJhY3Rpb246" + secrets.token_hex(32)
        user = self._remember_user(user_id, username)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "data": data,
            "channel_id": str(channel_id),
            "locale": "en-US",
            "app_permissions": app_permissions,
            "entitlements": [],
            "attachment_size_limit": attachment_size_limit,
        }
        if message is not None:
            payload["message"] = copy.deepcopy(message)
        if guild is not None:
            # Another channel (or guild) than the fake's own: same shape, other ids.
            known = self._extra_channels.get(channel_id)
            if known is not None and guild == self.guild_id:
                channel = copy.deepcopy(known)
            else:
                channel = {**self._guild_channel(), "id": str(channel_id), "guild_id": str(guild)}
            if permissions is None:
                permissions = self._member_permissions(user_id, role_ids)
            payload.update(
                guild_id=str(guild),
                guild={"id": str(guild), "locale": "en-US", "features": []},
                guild_locale="en-US",
                channel={**channel, "permissions": app_permissions},
                member={
                    "user": user,
                    "roles": [str(r) for r in role_ids],
                    "joined_at": _iso(created),
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                    "pending": False,
                    "premium_since": None,
                    "nick": None,
                    "avatar": None,
                    "communication_disabled_until": None,
                    "permissions": permissions,
                },
                authorizing_integration_owners={"0": str(guild)},
                context=0,
            )
        else:
            self._dm_recipients.setdefault(channel_id, user_id)
            payload.update(
                user=user,
                channel={
                    "id": str(channel_id),
                    "type": 1,
                    "last_message_id": None,
                    "flags": 0,
                    "recipients": [user],
                },
                authorizing_integration_owners={"0": "0"},
                context=1,
            )

        info = FakeInteraction(
            id=interaction_id,
            token=token,
            application_id=self.application_id,
            user_id=user_id,
            channel_id=channel_id,
            guild_id=guild,
            message_id=None if message is None else int(message["id"]),
        )
        # Registered before dispatch: the bot may answer before _dispatch returns.
        self._interactions[token] = _InteractionState(
            info=info,
            name=name,
            user=user,
            attachment_size_limit=attachment_size_limit,
            dispatched_at=time.monotonic(),
            kind=kind,
        )
        await self._dispatch(session, "INTERACTION_CREATE", payload)
        return info

    async def send_interaction(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: int = DEFAULT_USER_ID,
        username: str = "member",
        guild_id: int | Literal[_Default.GUILD] | None = DEFAULT_GUILD,
        channel_id: int | None = None,
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
        permissions: str | None = None,
        app_permissions: str = str(_EVERYONE_PERMISSIONS),
        roles: list[int] | None = None,
        created_at: dt.datetime | None = None,
        resolved: dict[str, Any] | None = None,
    ) -> FakeInteraction:
        """Dispatch a chat-input INTERACTION_CREATE and return what identifies it.

        ``guild_id=None`` makes a DM interaction (channel defaults to the user's DM channel).
        ``created_at`` in the past makes the interaction, and so its token, look old.

        Option values: str, int, float and bool get their option type; a dict with a ``type``
        is a raw option (``{"type": 8, "value": str(role_id)}``), whose users, members,
        channels or roles go in ``resolved`` (see ``resolved_roles``); an attachment object
        from ``add_attachment`` becomes an attachment option and fills ``resolved`` itself.
        ``roles`` (ids from ``add_role``) fill ``member.roles``; ``permissions`` defaults to
        what Discord computes from @everyone and those roles (everything for the guild owner).
        """
        guild = self.guild_id if guild_id is DEFAULT_GUILD else guild_id
        if channel_id is None:
            channel_id = self.channel_id if guild is not None else self.dm_channel_id(user_id)
        command = self._find_command(name, guild)
        command_data: dict[str, Any] = {
            "id": command["id"] if command else str(self._snowflake()),
            "name": name,
            "type": 1,
        }
        if command is not None and "guild_id" in command:
            command_data["guild_id"] = command["guild_id"]
        option_payloads, all_resolved = self._options(options, resolved)
        if option_payloads:
            command_data["options"] = option_payloads
        if all_resolved:
            command_data["resolved"] = all_resolved
        return await self._dispatch_interaction(
            kind=APPLICATION_COMMAND,
            name=name,
            data=command_data,
            user_id=user_id,
            username=username,
            guild=guild,
            channel_id=channel_id,
            attachment_size_limit=attachment_size_limit,
            permissions=permissions,
            app_permissions=app_permissions,
            roles=roles,
            created_at=created_at,
        )

    async def press_button(
        self,
        message_id: int | str,
        custom_id: str,
        *,
        user_id: int = DEFAULT_USER_ID,
        username: str = "member",
        guild_id: int | Literal[_Default.GUILD] | None = DEFAULT_GUILD,
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
        permissions: str | None = None,
        app_permissions: str = str(_EVERYONE_PERMISSIONS),
        roles: list[int] | None = None,
        created_at: dt.datetime | None = None,
    ) -> FakeInteraction:
        """Press a button on a message the bot sent: a MESSAGE_COMPONENT INTERACTION_CREATE.

        The interaction carries ``data: {custom_id, component_type: 2}`` and the whole stored
        message, in the channel the message is in; a DM message makes a DM interaction
        (``guild_id`` may then only be left as is or None). Raises ValueError for what real
        Discord cannot produce: an unknown message, a custom_id on no enabled, non-link
        button of the message, someone else's ephemeral message or DM.

        The bot may answer with callback types 4, 5, 6 (DEFERRED_UPDATE_MESSAGE) or 7
        (UPDATE_MESSAGE); after 6 or 7, ``@original`` is the message the button is on.
        """
        message = self._messages.get(int(message_id))
        if message is None:
            raise ValueError(f"FakeDiscord.press_button: no message {message_id}")
        walked = _walk_components(message["components"])
        buttons = [c for _, c in walked if c.get("type") == _BUTTON]
        button = next((b for b in buttons if b.get("custom_id") == custom_id), None)
        if button is None:
            ids = [b.get("custom_id") for b in buttons if b.get("custom_id")]
            raise ValueError(
                f"FakeDiscord.press_button: message {message_id} has no button {custom_id!r}"
                f" (its buttons: {ids})"
            )
        if button.get("disabled"):
            raise ValueError(f"FakeDiscord.press_button: button {custom_id!r} is disabled")
        channel_id = int(message["channel_id"])
        if message["flags"] & EPHEMERAL:
            viewer = int((message.get("interaction_metadata") or {})["user"]["id"])
            if viewer != user_id:
                raise ValueError(
                    f"FakeDiscord.press_button: only user {viewer} sees ephemeral message"
                    f" {message_id}"
                )
        recipient = self._dm_recipients.get(channel_id)
        if recipient is not None:
            if guild_id not in (DEFAULT_GUILD, None):
                raise ValueError("FakeDiscord.press_button: the message is in a DM channel")
            if recipient != user_id:
                raise ValueError(
                    f"FakeDiscord.press_button: message {message_id} is in the DM of {recipient}"
                )
            guild: int | None = None
        elif guild_id is None:
            raise ValueError(f"FakeDiscord.press_button: message {message_id} is in a guild")
        else:
            guild = self.guild_id if guild_id is DEFAULT_GUILD else guild_id
        return await self._dispatch_interaction(
            kind=MESSAGE_COMPONENT,
            name=custom_id,
            data={"custom_id": custom_id, "component_type": _BUTTON},
            user_id=user_id,
            username=username,
            guild=guild,
            channel_id=channel_id,
            attachment_size_limit=attachment_size_limit,
            permissions=permissions,
            app_permissions=app_permissions,
            roles=roles,
            created_at=created_at,
            message=message,
        )
