"""The REST API under ``/api/v10`` and the attachment CDN: routing, bot and webhook
authentication, rate-limit buckets, fault injection, and one handler per route."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
import mimetypes
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import discord
from aiohttp import BodyPartReader, web

from tests.fakes.discord_server.records import (
    _CHANNEL_FLAGS,
    _CREATE_FLAGS,
    API_PREFIX,
    APPLICATION_COMMAND,
    EPHEMERAL,
    GENERIC_BUCKET_LIMIT,
    LOADING,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    TOKEN_LIFETIME,
    WEBHOOK_BUCKET_LIMIT,
    WEBHOOK_BUCKET_WINDOW,
    FakeInteraction,
    RecordedFile,
    RecordedRequest,
    _now,
)
from tests.fakes.discord_server.state import _InteractionState
from tests.fakes.discord_server.validation import (
    _ApiError,
    _command_problems,
    _form_error,
    _modal_problems,
)

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


class DiscordRest:
    """REST routes and fault injection of ``FakeDiscord``."""

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
        if path.endswith("/callback"):
            if self.callback_replies_wait_for is not None:
                await self.callback_replies_wait_for.wait()
            if self.callback_reply_delay:
                await asyncio.sleep(self.callback_reply_delay)
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
        # `shards`: the count Discord recommends (set `recommended_shards` to change it).
        shards = self.recommended_shards
        return _Reply(
            200, {"url": self.gateway_url, "shards": shards, "session_start_limit": limit}
        )

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
        # A modal opened by a button answers like the button press: its reply is a reply to
        # the message, and it may update that message instead (types 6 and 7).
        component = state.kind == MESSAGE_COMPONENT or (
            state.kind == MODAL_SUBMIT and state.info.message_id is not None
        )
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
        elif ctype == 9 and state.kind in (APPLICATION_COMMAND, MESSAGE_COMPONENT):
            # MODAL: no message; the member sees the form, and its submission is a new
            # interaction (``submit_modal``). A modal cannot answer a modal's submission.
            problems = _modal_problems(data)
            if problems:
                raise _form_error(problems)
            state.modal = copy.deepcopy(data)
        else:  # 6/7 only answer components, 8 only autocomplete
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
        if not self.bot_may_post(channel_id):
            raise _ApiError(403, 50013, "Missing Permissions")
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
