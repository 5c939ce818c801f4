"""The gateway websocket: HELLO, IDENTIFY, READY and GUILD_CREATE, RESUME with replay, and
the events a test injects (messages, slash commands, button presses, modal submissions)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSMsgType, web

from tests.fakes.discord_server.records import (
    _BUTTON,
    _EVERYONE_PERMISSIONS,
    _PRIVILEGED_INTENTS,
    APPLICATION_COMMAND,
    CDN_PREFIX,
    CHAT_INPUT,
    DEFAULT_GUILD,
    DEFAULT_UPLOAD_LIMIT,
    DEFAULT_USER_ID,
    EPHEMERAL,
    HEARTBEAT_INTERVAL_MS,
    MESSAGE_COMMAND,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    FakeInteraction,
    _Default,
    _iso,
    _now,
)
from tests.fakes.discord_server.state import _InteractionState
from tests.fakes.discord_server.validation import (
    _option_payload,
    _walk_components,
    modal_text_inputs,
)


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
    # IDENTIFY's `shard: [shard_id, num_shards]`; an unsharded session is shard [0, 1].
    shard: tuple[int, int] = (0, 1)

    def serves(self, guild_id: int | None) -> bool:
        """Discord's routing: a guild's events go to shard (guild_id >> 22) % num_shards, DMs
        to shard 0."""
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return (guild_id >> 22) % count == shard_id


class DiscordGateway:
    """Gateway sessions and injected events of ``FakeDiscord``."""

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
                    if self._shard_sessions.get(session.shard) is session:
                        del self._shard_sessions[session.shard]
                    if self._current_session is session:
                        # The newest session still open (another shard's), if any.
                        remaining = list(self._shard_sessions.values())
                        self._current_session = remaining[-1] if remaining else None
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
        shard = _valid_shard(data.get("shard", [0, 1]))
        if shard is None:
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        session = _GatewaySession(session_id=uuid.uuid4().hex, conn=conn, shard=shard)
        conn.session = session
        self._sessions[session.session_id] = session
        self.identify_count += 1
        ready: dict[str, Any] = {
            "v": 10,
            "user": self._bot_user(full=True),
            "guilds": [g for g in self.ready_guild_entries() if session.serves(int(g["id"]))],
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
        if "shard" in data:
            ready["shard"] = list(shard)
        await self._dispatch(session, "READY", ready)
        for guild in self.ready_guild_creates():  # each server READY listed, once available
            if session.serves(int(guild["id"])):
                await self._dispatch(session, "GUILD_CREATE", guild)
        # The newest session of a shard gets its events (an older one is being replaced).
        self._shard_sessions.pop(shard, None)
        self._shard_sessions[shard] = session
        self._current_session = session
        await self._notify_state()

    def send_events_to(self, session_number: int) -> None:
        """Which connected bot gets the events injected from now on, by the order the sessions
        identified (0: the first still open). Several bot processes each hold a session, and
        Discord sends a server's events to the one serving its shard; by default the newest
        session gets them (a test of unsharded processes picks one here)."""
        self._current_session = self._chosen_session = list(self._sessions.values())[session_number]

    def _session_for(self, guild_id: int | None) -> _GatewaySession | None:
        """The session a guild's events (or, for None, a DM's) go to: the newest one whose
        shard serves it, unless a test chose one (`send_events_to`); None if no client
        identified for that shard."""
        chosen = self._chosen_session
        if chosen is not None and chosen.serves(guild_id) and chosen in self._sessions.values():
            return chosen
        for session in reversed(self._shard_sessions.values()):
            if session.serves(guild_id):
                return session
        return None

    def shards_ready(self, count: int) -> bool:
        """Every shard of `count` has a connected session identified with that count."""
        live = {
            s.shard[0]
            for s in self._shard_sessions.values()
            if s.shard[1] == count and s.conn is not None
        }
        return live == set(range(count))

    async def wait_until_shards_ready(self, count: int, timeout: float = 30) -> None:
        """Wait until each of `count` shards has a connected READY session (several processes
        each running some of them)."""
        await self._wait_state(lambda: self.shards_ready(count), timeout, f"{count} shards READY")

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
        self,
        content: str,
        *,
        user_id: int = DEFAULT_USER_ID,
        mention_bot: bool = True,
        files: list[tuple[bytes, str, str | None]] | None = None,
    ) -> int:
        """A member's message in the fake's channel (MESSAGE_CREATE), e.g. ``@bot help``.

        ``files`` are (data, filename, content type) uploads: each becomes an attachment
        object (served by the fake CDN under ``/attachments/<channel>/``), and the message is
        kept, so ``use_message_command`` can target it as Discord resolves messages.
        """
        session = self._session_for(self.guild_id)
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
            "attachments": [
                self._message_attachment(data, filename, content_type)
                for data, filename, content_type in files or []
            ],
            "embeds": [],
            "pinned": False,
            "flags": 0,
            "components": [],
        }
        self._messages[message_id] = copy.deepcopy(payload)
        await self._dispatch(session, "MESSAGE_CREATE", payload)
        return message_id

    def _message_attachment(
        self, data: bytes, filename: str, content_type: str | None
    ) -> dict[str, Any]:
        """An attachment of a member's message: as in Discord's Message object."""
        attachment_id = self._snowflake()
        self._attachment_data[attachment_id] = bytes(data)
        url = f"{self.http_base}{CDN_PREFIX}/{self.channel_id}/{attachment_id}/{filename}"
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
        return attachment

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

    def _find_command(
        self, name: str, guild_id: int | None, kind: int = CHAT_INPUT
    ) -> dict[str, Any] | None:
        scopes: list[int | None] = [guild_id, None] if guild_id is not None else [None]
        scopes += [s for s in self.synced_commands if s not in scopes]
        for scope in scopes:
            for command in self.synced_commands.get(scope, []):
                if command["name"] == name and command.get("type", CHAT_INPUT) == kind:
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
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Build an INTERACTION_CREATE (guild member or DM user parts), register it, send it."""
        session = self._session_for(guild)
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
            # The member's client language (every interaction but PING carries it).
            "locale": locale,
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
                guild={"id": str(guild), "locale": self._guild_locale(guild), "features": []},
                # The server's preferred locale (Community settings), in guilds only.
                guild_locale=self._guild_locale(guild),
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
            permissions=permissions,
            roles=role_ids,
            locale=locale,
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
        locale: str = "en-US",
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
        ``locale`` is the member's client language (Discord's locale codes: "de", "pt-BR"…);
        ``name`` is the command's default name, as Discord sends it in every language.
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
            locale=locale,
        )

    async def use_message_command(
        self,
        name: str,
        message_id: int,
        *,
        user_id: int = DEFAULT_USER_ID,
        username: str = "member",
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Use a message context-menu command (type 3) on a message, as Discord sends it: an
        APPLICATION_COMMAND interaction whose data has ``type: 3``, ``target_id`` and the
        message in ``resolved.messages``. Raises ValueError for what Discord cannot produce:
        an unknown message, or a command the bot has not registered.
        """
        message = self._messages.get(int(message_id))
        if message is None:
            raise ValueError(f"FakeDiscord.use_message_command: no message {message_id}")
        channel_id = int(message["channel_id"])
        recipient = self._dm_recipients.get(channel_id)
        guild = None if recipient is not None else int(message.get("guild_id") or self.guild_id)
        command = self._find_command(name, guild, MESSAGE_COMMAND)
        if command is None:
            raise ValueError(f"FakeDiscord.use_message_command: no message command {name!r}")
        target = {k: v for k, v in message.items() if k not in ("member", "guild_id")}
        data: dict[str, Any] = {
            "id": command["id"],
            "name": name,
            "type": MESSAGE_COMMAND,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): copy.deepcopy(target)}},
        }
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return await self._dispatch_interaction(
            kind=APPLICATION_COMMAND,
            name=name,
            data=data,
            user_id=user_id,
            username=username,
            guild=guild,
            channel_id=channel_id,
            attachment_size_limit=attachment_size_limit,
            permissions=None,
            app_permissions=str(_EVERYONE_PERMISSIONS),
            roles=None,
            created_at=None,
            locale=locale,
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
        locale: str = "en-US",
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
            locale=locale,
            message=message,
        )

    async def submit_modal(
        self,
        opened_by: FakeInteraction,
        values: dict[str, str] | None = None,
        *,
        created_at: dt.datetime | None = None,
    ) -> FakeInteraction:
        """Submit the modal the bot answered ``opened_by`` with (callback type 9): a
        MODAL_SUBMIT INTERACTION_CREATE from the same member, in the same channel.

        ``values`` are what the member typed, by text input custom id; an input left out keeps
        the value the modal prefilled (or stays empty). The interaction carries ``data:
        {custom_id, components}`` laid out as the modal was (action rows or labels, each with
        ``{type: 4, id, custom_id, value}``), and, for a modal opened by a button, the message
        the button is on. Raises ValueError for what Discord's client would not send: no modal
        open, one already submitted, an unknown input, or a value the input's ``required``,
        ``min_length`` and ``max_length`` forbid.
        """
        state = self._interactions.get(opened_by.token)
        if state is None or state.modal is None:
            raise ValueError("FakeDiscord.submit_modal: the bot opened no modal for it")
        if state.modal_submitted:
            raise ValueError("FakeDiscord.submit_modal: that modal was already submitted")
        modal = state.modal
        typed = dict(values or {})
        inputs = modal_text_inputs(modal)
        unknown = set(typed) - {str(i["custom_id"]) for i in inputs}
        if unknown:
            raise ValueError(f"FakeDiscord.submit_modal: the modal has no input {sorted(unknown)}")
        submitted: dict[str, str] = {}
        for text_input in inputs:
            custom_id = str(text_input["custom_id"])
            value = typed.get(custom_id, text_input.get("value") or "")
            low, high = text_input.get("min_length"), text_input.get("max_length")
            if not value and text_input.get("required", True):
                raise ValueError(f"FakeDiscord.submit_modal: {custom_id} is required")
            if value and low is not None and len(value) < low:
                raise ValueError(f"FakeDiscord.submit_modal: {custom_id} is under {low} chars")
            if high is not None and len(value) > high:
                raise ValueError(f"FakeDiscord.submit_modal: {custom_id} is over {high} chars")
            submitted[custom_id] = value
        next_id = 0

        def answered(text_input: dict[str, Any]) -> dict[str, Any]:
            nonlocal next_id
            next_id += 1
            custom_id = str(text_input["custom_id"])
            return {"type": 4, "id": next_id, "custom_id": custom_id, "value": submitted[custom_id]}

        components: list[dict[str, Any]] = []
        for component in modal["components"]:
            next_id += 1
            outer = next_id
            if component["type"] == 1:
                inner = [answered(c) for c in component["components"]]
                components.append({"type": 1, "id": outer, "components": inner})
            else:
                components.append(
                    {"type": 18, "id": outer, "component": answered(component["component"])}
                )
        state.modal_submitted = True
        info = state.info
        message = None if info.message_id is None else self._messages.get(info.message_id)
        return await self._dispatch_interaction(
            kind=MODAL_SUBMIT,
            name=str(modal["custom_id"]),
            data={"custom_id": modal["custom_id"], "components": components},
            user_id=info.user_id,
            username=str(state.user.get("username", "member")),
            guild=info.guild_id,
            channel_id=info.channel_id,
            attachment_size_limit=state.attachment_size_limit,
            permissions=state.permissions,
            app_permissions=str(_EVERYONE_PERMISSIONS),
            roles=state.roles,
            created_at=created_at,
            locale=state.locale,
            message=message,
        )


def _valid_shard(value: Any) -> tuple[int, int] | None:
    """IDENTIFY's `shard` as (shard_id, num_shards), or None when Discord would close with
    4010: not two integers, or not 0 <= shard_id < num_shards."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    shard_id, count = value
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (shard_id, count)):
        return None
    return (shard_id, count) if 0 <= shard_id < count else None
