"""What Discord remembers: users, the guild, its channels, threads and roles, DM channels,
messages with their attachments and components, interactions and their responses; and the
queries tests make of it."""

from __future__ import annotations

import copy
import datetime as dt
import mimetypes
from dataclasses import dataclass, field
from typing import Any

import discord

from tests.fakes.discord_server.records import (
    _ADMINISTRATOR,
    _ALL_PERMISSIONS,
    _EDIT_FLAGS,
    _EVERYONE_PERMISSIONS,
    _FILE_FIELD,
    APPLICATION_COMMAND,
    CDN_PREFIX,
    EPHEMERAL_CDN_PREFIX,
    IS_COMPONENTS_V2,
    LOADING,
    MESSAGE_COMPONENT,
    FakeInteraction,
    RecordedFile,
    RecordedRequest,
    _iso,
    _now,
)
from tests.fakes.discord_server.validation import (
    _ApiError,
    _component_problems,
    _form_error,
    _message_problems,
    _numbered_components,
    _png_size,
    _Problem,
)


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
    # The modal this interaction answered with (callback type 9), until it is submitted.
    modal: dict[str, Any] | None = None
    modal_submitted: bool = False
    # The member's permissions and roles as the interaction carried them (a modal's
    # submission comes from the same member).
    permissions: str | None = None
    roles: list[int] = field(default_factory=list)
    locale: str = "en-US"  # the member's client language; a modal's submission keeps it


class DiscordState:
    """State and queries of ``FakeDiscord``; its attributes are set in ``FakeDiscord.__init__``."""

    # ------------------------------------------------------------------ queries for tests

    def _guild_locale(self, guild_id: int) -> str:
        """A server's preferred locale: a joined server's own, else the fake guild's."""
        joined = self._joined.get(guild_id)
        return joined.preferred_locale if joined is not None else self.preferred_locale

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
        session = self._session_for(self.guild_id)
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
        joined = self.joined_channel(channel_id)
        if joined is not None:
            return joined
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
            "preferred_locale": self.preferred_locale,
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
