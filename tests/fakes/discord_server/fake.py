"""The fake service itself: ``FakeDiscord`` starts and stops the aiohttp server, owns every
piece of state, and offers the waits tests use. Its behaviour lives in the mixins it is made of:
state, REST and gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.discord_server.gateway import DiscordGateway, _GatewayConn, _GatewaySession
from tests.fakes.discord_server.joins import DiscordJoins, JoinedGuild
from tests.fakes.discord_server.records import (
    API_PREFIX,
    CDN_PREFIX,
    DEFAULT_APPLICATION_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_GUILD_OWNER_ID,
    DEFAULT_OWNER_ID,
    DEFAULT_UPLOAD_LIMIT,
    EPHEMERAL_CDN_PREFIX,
    GATEWAY_PATH,
    RecordedRequest,
)
from tests.fakes.discord_server.rest import DiscordRest, _Fault, _Window
from tests.fakes.discord_server.state import DiscordState, _InteractionState


class FakeDiscord(DiscordGateway, DiscordRest, DiscordState, DiscordJoins):
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
        # The fake guild's preferred locale (its GUILD_CREATE and interactions' guild_locale);
        # set it before the bot connects.
        self.preferred_locale = "en-US"
        # Seconds an interaction callback's reply takes to come back (a real network's round
        # trip; loopback's is well under a millisecond). The callback is recorded on arrival.
        self.callback_reply_delay = 0.0
        # While set and not yet set free, callback replies wait for it (recorded on arrival):
        # a test can see what the bot sends before any reply to its answers is back.
        self.callback_replies_wait_for: asyncio.Event | None = None

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
        # Servers the bot was added to after READY (``join_guild``), and their channels.
        self._joined: dict[int, JoinedGuild] = {}
        self._joined_channels: dict[int, JoinedGuild] = {}
        self._removed: set[int] = set()  # servers the bot was removed from (``remove_bot``)
        self._outages: set[int] = set()  # servers unavailable (``start_outage``)

        self._sessions: dict[str, _GatewaySession] = {}
        self._current_session: _GatewaySession | None = None  # the newest identified
        self._chosen_session: _GatewaySession | None = None  # `send_events_to`'s, if any
        self._shard_sessions: dict[tuple[int, int], _GatewaySession] = {}  # newest per shard
        # GET /gateway/bot's recommended shard count.
        self.recommended_shards = 1
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
