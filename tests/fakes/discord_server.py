"""A wire-level fake of Discord for tests: REST under ``/api/v10`` plus the gateway websocket.

This module owns the fake service and nothing else: an aiohttp server on 127.0.0.1 that an
unmodified discord.py 2.7 client logs in to, connects its gateway to, receives injected
INTERACTION_CREATE events from, and answers over REST. It records every REST request faithfully
(tests assert on what the bot sent), keeps the state Discord would keep (interaction responses,
followups, channel and DM messages, synced commands, gateway sessions), enforces the platform
rules a bot can trip over (token lifetime, double acknowledgement, message and command limits,
upload limits, the small interaction-webhook rate limit) and lets a test inject faults.

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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import discord
from aiohttp import BodyPartReader, WSMsgType, web

__all__ = [
    "DEFAULT_GUILD",
    "FakeDiscord",
    "FakeInteraction",
    "RecordedFile",
    "RecordedRequest",
]

API_PREFIX: Final = "/api/v10"
GATEWAY_PATH: Final = "/gateway"
CDN_PREFIX: Final = "/attachments"

DEFAULT_APPLICATION_ID: Final = 1_300_000_000_000_000_001
DEFAULT_GUILD_ID: Final = 1_300_000_000_000_000_100
DEFAULT_CHANNEL_ID: Final = 1_300_000_000_000_000_200
DEFAULT_OWNER_ID: Final = 1_300_000_000_000_000_300
DEFAULT_USER_ID: Final = 1_300_000_000_000_000_400

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

_PRIVILEGED_INTENTS: Final = discord.Intents(
    members=True, presences=True, message_content=True
).value
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
    name: str
    user: dict[str, Any]
    attachment_size_limit: int
    dispatched_at: float
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


def _option_payload(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):  # a raw option, e.g. {"type": 11, "value": "<attachment id>"}
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
    """Fake Discord service. ``start()`` it, point discord.py at it, ``stop()`` it."""

    def __init__(
        self,
        *,
        application_id: int = DEFAULT_APPLICATION_ID,
        bot_user_id: int | None = None,
        guild_id: int = DEFAULT_GUILD_ID,
        channel_id: int = DEFAULT_CHANNEL_ID,
        token: str = "fake-bot-token",
        bot_username: str = "imagine-bot",
        enforce_webhook_rate_limit: bool = True,
        allow_privileged_intents: bool = False,
    ) -> None:
        self.application_id = application_id
        # Modern applications share one id with their bot user.
        self.bot_user_id = application_id if bot_user_id is None else bot_user_id
        self.guild_id = guild_id
        self.channel_id = channel_id
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
        self._interactions: dict[str, _InteractionState] = {}
        self._messages: dict[int, dict[str, Any]] = {}
        self._attachment_data: dict[int, bytes] = {}
        self._dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self._dm_recipients: dict[int, int] = {}  # DM channel id -> user id

        self._sessions: dict[str, _GatewaySession] = {}
        self._current_session: _GatewaySession | None = None
        self._conns: set[_GatewayConn] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", API_PREFIX + "{tail:.*}", self._handle_api)
        app.router.add_get(GATEWAY_PATH, self._handle_gateway)
        app.router.add_get(CDN_PREFIX + "/{channel}/{attachment}/{filename}", self._handle_cdn)
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
        """The bytes stored for an attachment the bot uploaded."""
        return self._attachment_data[int(attachment_id)]

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
        return {
            "id": str(DEFAULT_OWNER_ID),
            "username": "owner",
            "discriminator": "0",
            "global_name": "Owner",
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
        }

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
            "team": None,
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
        if channel_id in self._dm_recipients:
            return self._dm_channel(channel_id)
        raise _ApiError(404, 10003, "Unknown Channel")

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
            "owner_id": str(DEFAULT_OWNER_ID),
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
            "roles": [
                {
                    "id": str(self.guild_id),  # @everyone shares the guild's id
                    "name": "@everyone",
                    "permissions": str(_EVERYONE_PERMISSIONS),
                    "position": 0,
                    "color": 0,
                    "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "icon": None,
                    "unicode_emoji": None,
                    "flags": 0,
                }
            ],
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
            "channels": [self._guild_channel()],
            "threads": [],
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
            message["interaction_metadata"] = {
                "id": str(info.id),
                "type": 2,
                "name": interaction.name,
                "user": copy.deepcopy(interaction.user),
                "authorizing_integration_owners": owners,
            }
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
        problems = _message_problems(payload)
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
            fields["components"] = payload["components"] or []
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
        data = self._attachment_data.get(int(request.match_info["attachment"]))
        if data is None:
            return web.Response(status=404)
        filename = request.match_info["filename"]
        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
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
        message: dict[str, Any] | None = None
        if ctype == 5:
            message = self._new_message(
                channel_id=channel_id,
                fields={},
                flags=LOADING | (flags & EPHEMERAL),
                message_type=20,
                interaction=state,
            )
            state.original_pending = True
        elif ctype == 4:
            fields = self._compose(
                None, data, rec.files, limit=state.attachment_size_limit, channel_id=channel_id
            )
            message = self._new_message(
                channel_id=channel_id,
                fields=fields,
                flags=flags & _CREATE_FLAGS,
                message_type=20,
                interaction=state,
            )
        elif ctype != 9:  # 9 = modal; 6/7 are for component interactions, 8 for autocomplete
            raise _form_error(
                [(("type",), "INTERACTION_CALLBACK_TYPE_INVALID", f"Invalid callback type {ctype}")]
            )
        state.callback_type = ctype
        state.callback_at = rec.at
        interaction: dict[str, Any] = {"id": str(state.info.id), "type": 2}
        resource: dict[str, Any] = {"type": ctype}
        if message is not None:
            state.original_id = int(message["id"])
            interaction.update(
                response_message_id=message["id"],
                response_message_loading=bool(message["flags"] & LOADING),
                response_message_ephemeral=bool(message["flags"] & EPHEMERAL),
            )
            if ctype == 4:
                resource["message"] = copy.deepcopy(message)
        return _Reply(200, {"interaction": interaction, "resource": resource})

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
        del self._messages[int(message["id"])]
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
        for message in self.channel_messages.get(channel_id, []):
            if message["id"] == m["message_id"]:
                return message
        raise _ApiError(404, 10008, "Unknown Message")

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
        message = self._channel_message(m)
        self.channel_messages[int(m["channel_id"])].remove(message)
        self._messages.pop(int(message["id"]), None)
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
        permissions: str = str(_EVERYONE_PERMISSIONS),
        app_permissions: str = str(_EVERYONE_PERMISSIONS),
        created_at: dt.datetime | None = None,
        resolved: dict[str, Any] | None = None,
    ) -> FakeInteraction:
        """Dispatch a chat-input INTERACTION_CREATE and return what identifies it.

        ``guild_id=None`` makes a DM interaction (channel defaults to the user's DM channel).
        ``created_at`` in the past makes the interaction, and so its token, look old.
        """
        session = self._current_session
        if session is None:
            raise RuntimeError("FakeDiscord.send_interaction: no client is READY yet")
        guild = self.guild_id if guild_id is DEFAULT_GUILD else guild_id
        if channel_id is None:
            channel_id = self.channel_id if guild is not None else self.dm_channel_id(user_id)
        created = created_at or _now()
        interaction_id = self._snowflake(created)
        token = "aW50ZXJhY3Rpb246" + secrets.token_hex(32)
        user = self._remember_user(user_id, username)

        command = self._find_command(name, guild)
        command_data: dict[str, Any] = {
            "id": command["id"] if command else str(self._snowflake()),
            "name": name,
            "type": 1,
        }
        if command is not None and "guild_id" in command:
            command_data["guild_id"] = command["guild_id"]
        if options:
            command_data["options"] = [_option_payload(k, v) for k, v in options.items()]
        if resolved:
            # Users, members, channels or attachments that options refer to, as Discord sends.
            command_data["resolved"] = resolved

        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": 2,
            "token": token,
            "version": 1,
            "data": command_data,
            "channel_id": str(channel_id),
            "locale": "en-US",
            "app_permissions": app_permissions,
            "entitlements": [],
            "attachment_size_limit": attachment_size_limit,
        }
        if guild is not None:
            # Another channel (or guild) than the fake's own: same shape, other ids.
            channel = {**self._guild_channel(), "id": str(channel_id), "guild_id": str(guild)}
            payload.update(
                guild_id=str(guild),
                guild={"id": str(guild), "locale": "en-US", "features": []},
                guild_locale="en-US",
                channel={**channel, "permissions": app_permissions},
                member={
                    "user": user,
                    "roles": [],
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
        )
        # Registered before dispatch: the bot may answer before _dispatch returns.
        self._interactions[token] = _InteractionState(
            info=info,
            name=name,
            user=user,
            attachment_size_limit=attachment_size_limit,
            dispatched_at=time.monotonic(),
        )
        await self._dispatch(session, "INTERACTION_CREATE", payload)
        return info
