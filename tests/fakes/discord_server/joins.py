"""Servers the bot joins while connected: GUILD_CREATE for a guild that was not in READY; and
servers it is removed from, or that go through an outage: GUILD_DELETE.

Discord sends a full GUILD_CREATE when the bot is added to a server; discord.py then fires
`on_guild_join` (a GUILD_CREATE for a guild READY listed fires `on_guild_available` instead).
The guild comes with its roles, the bot's member entry and its channels with their permission
overwrites, so the client computes the bot's permissions in each channel as Discord does. A
message posted in such a channel is checked against those permissions (403, code 50013).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import discord

from tests.fakes.discord_server.records import _ADMINISTRATOR, _ALL_PERMISSIONS, _iso, _now


@dataclass
class JoinedGuild:
    """A server added after READY (see `DiscordJoins.join_guild`)."""

    id: int
    channel_id: int  # its one text channel
    system_channel_id: int | None
    everyone_permissions: int
    bot_role_id: int
    bot_role_permissions: int
    overwrites: list[dict[str, Any]] = field(default_factory=list)  # on its text channel
    preferred_locale: str = "en-US"  # the server's language (Community settings)


class DiscordJoins:
    """The mixin of `FakeDiscord` for servers joined after READY, left, or unavailable."""

    bot_user_id: int
    guild_id: int
    guild_owner_id: int
    _joined: dict[int, JoinedGuild]  # guild id -> guild
    _joined_channels: dict[int, JoinedGuild]  # channel id -> its guild
    _removed: set[int]  # servers the bot was removed from: no longer in READY
    _outages: set[int]  # servers unavailable: in READY as such, with no GUILD_CREATE after
    _current_session: Any
    _session_for: Any
    _snowflake: Any
    _dispatch: Any
    _role_payload: Any
    _bot_user: Any
    _guild_create: Any

    async def remove_bot(self, guild_id: int | None = None) -> None:
        """The bot is removed from a server (kicked, banned, or the server deleted): Discord
        sends GUILD_DELETE without `unavailable` (discord.py: `on_guild_remove`), and READY no
        longer lists it. `guild_id`: a joined server's, by default the fake's own. Without a
        connected client (the bot is offline) nothing is sent: its next READY just leaves the
        server out."""
        guild = self.guild_id if guild_id is None else guild_id
        self._known_guild(guild)
        self._removed.add(guild)
        self._outages.discard(guild)
        session = self._session_for(guild)
        if session is not None:
            await self._dispatch(session, "GUILD_DELETE", {"id": str(guild)})

    async def add_bot_back(self, guild_id: int | None = None) -> None:
        """The server invites the bot again after `remove_bot`: a GUILD_CREATE without
        `unavailable` (discord.py: `on_guild_join`), or, offline, the next READY lists it."""
        guild = self.guild_id if guild_id is None else guild_id
        self._known_guild(guild)
        self._removed.discard(guild)
        session = self._session_for(guild)
        if session is not None:
            await self._dispatch(session, "GUILD_CREATE", self._joining(guild))

    async def start_outage(self, guild_id: int | None = None) -> None:
        """The server becomes unavailable (a Discord outage): GUILD_DELETE with `unavailable:
        true` (discord.py: `on_guild_unavailable`); READY lists it as unavailable and no
        GUILD_CREATE follows until `end_outage`."""
        guild = self.guild_id if guild_id is None else guild_id
        self._known_guild(guild)
        self._outages.add(guild)
        session = self._session_for(guild)
        if session is not None:
            payload = {"id": str(guild), "unavailable": True}
            await self._dispatch(session, "GUILD_DELETE", payload)

    async def end_outage(self, guild_id: int | None = None) -> None:
        """The server is available again: GUILD_CREATE with `unavailable: false`."""
        guild = self.guild_id if guild_id is None else guild_id
        self._outages.discard(guild)
        session = self._session_for(guild)
        if session is not None:
            payload = {**self._joining(guild), "unavailable": False}
            await self._dispatch(session, "GUILD_CREATE", payload)

    def ready_guild_entries(self) -> list[dict[str, Any]]:
        """READY's `guilds`: every server the bot is in, each as an unavailable guild (Discord
        sends the full guilds as GUILD_CREATE after)."""
        guilds = [self.guild_id, *self._joined]
        return [{"id": str(g), "unavailable": True} for g in guilds if g not in self._removed]

    def ready_guild_creates(self) -> list[dict[str, Any]]:
        """The GUILD_CREATEs after READY: the servers in it that are not in an outage."""
        creates = []
        if self.guild_id not in self._removed | self._outages:
            creates.append(self._guild_create())
        for guild in self._joined.values():
            if guild.id not in self._removed | self._outages:
                creates.append(self._joined_guild_create(guild, known=True))
        return creates

    def _known_guild(self, guild_id: int) -> None:
        if guild_id != self.guild_id and guild_id not in self._joined:
            raise ValueError(f"FakeDiscord: the bot was never in server {guild_id}")

    def _joining(self, guild_id: int) -> dict[str, Any]:
        """A GUILD_CREATE as Discord sends it when the bot joins: without `unavailable`."""
        if guild_id == self.guild_id:
            return {k: v for k, v in self._guild_create().items() if k != "unavailable"}
        return self._joined_guild_create(self._joined[guild_id])

    async def join_guild(
        self,
        *,
        system_channel: bool = True,
        everyone: discord.Permissions | None = None,
        bot_role: discord.Permissions | None = None,
        overwrites: list[tuple[str, discord.Permissions, discord.Permissions]] | None = None,
        preferred_locale: str = "en-US",
        guild_id: int | None = None,
        offline: bool = False,
    ) -> JoinedGuild:
        """Add the bot to a new server (GUILD_CREATE to the connected client) and return it.

        The server has one text channel, its system channel unless `system_channel` is False.
        `everyone` is the @everyone role's permissions (default: Discord's defaults), `bot_role`
        the bot's managed role's (default: View Channel, Send Messages, Embed Links and Attach
        Files, as the invite asks). `overwrites` are the channel's, each `(target, allow,
        deny)` with target "everyone" or "bot". `guild_id` picks the server's id (which decides
        its shard: `(guild_id >> 22) % num_shards`); the GUILD_CREATE goes to the session of
        its shard. `offline`: the bot was added while no client ran, so nothing is sent and
        the next READY of its shard lists it.
        """
        guild_id = self._snowflake() if guild_id is None else guild_id
        if guild_id == self.guild_id or guild_id in self._joined:
            raise ValueError(f"FakeDiscord.join_guild: the bot is already in server {guild_id}")
        session = None if offline else self._session_for(guild_id)
        if session is None and not offline:
            raise RuntimeError("FakeDiscord.join_guild: no client is READY yet")
        channel_id = self._snowflake()
        role_id = self._snowflake()
        default_everyone = discord.Permissions(
            view_channel=True, send_messages=True, embed_links=True, attach_files=True
        )
        invite = discord.Permissions(
            view_channel=True, send_messages=True, embed_links=True, attach_files=True
        )
        written: list[dict[str, Any]] = []
        for target, allow, deny in overwrites or []:
            written.append(
                {
                    "id": str(guild_id if target == "everyone" else self.bot_user_id),
                    "type": 0 if target == "everyone" else 1,
                    "allow": str(allow.value),
                    "deny": str(deny.value),
                }
            )
        guild = JoinedGuild(
            id=guild_id,
            channel_id=channel_id,
            system_channel_id=channel_id if system_channel else None,
            everyone_permissions=(everyone or default_everyone).value,
            bot_role_id=role_id,
            bot_role_permissions=(bot_role or invite).value,
            overwrites=written,
            preferred_locale=preferred_locale,
        )
        self._joined[guild_id] = guild
        self._joined_channels[channel_id] = guild
        if session is not None:
            await self._dispatch(session, "GUILD_CREATE", self._joined_guild_create(guild))
        return guild

    async def rejoin_guild(self, guild: JoinedGuild) -> None:
        """The bot is removed from `guild` (GUILD_DELETE) and added back (GUILD_CREATE), as
        when a server kicks and re-invites it: discord.py fires `on_guild_join` again."""
        session = self._session_for(guild.id)
        if session is None:
            raise RuntimeError("FakeDiscord.rejoin_guild: no client is READY yet")
        await self._dispatch(session, "GUILD_DELETE", {"id": str(guild.id)})
        await self._dispatch(session, "GUILD_CREATE", self._joined_guild_create(guild))

    def joined_channel(self, channel_id: int) -> dict[str, Any] | None:
        guild = self._joined_channels.get(channel_id)
        return None if guild is None else self._joined_text_channel(guild)

    def bot_may_post(self, channel_id: int) -> bool:
        """Discord's permission computation for the bot in a joined server's channel: base
        permissions from @everyone and its role, then the @everyone overwrite, then the
        member's own; administrator overrides all."""
        guild = self._joined_channels.get(channel_id)
        if guild is None:
            return True  # the fake's own guild has no overwrites
        value = guild.everyone_permissions | guild.bot_role_permissions
        if value & _ADMINISTRATOR:
            value = _ALL_PERMISSIONS
        else:
            for overwrite in guild.overwrites:  # the @everyone one first, as written
                if overwrite["type"] == 0:
                    value = (value & ~int(overwrite["deny"])) | int(overwrite["allow"])
            for overwrite in guild.overwrites:
                if overwrite["type"] == 1:
                    value = (value & ~int(overwrite["deny"])) | int(overwrite["allow"])
        needed = discord.Permissions(view_channel=True, send_messages=True).value
        return value & needed == needed

    def _joined_text_channel(self, guild: JoinedGuild) -> dict[str, Any]:
        return {
            "id": str(guild.channel_id),
            "type": 0,
            "guild_id": str(guild.id),
            "name": "general",
            "position": 0,
            "permission_overwrites": list(guild.overwrites),
            "nsfw": False,
            "topic": None,
            "parent_id": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def _joined_guild_create(self, guild: JoinedGuild, *, known: bool = False) -> dict[str, Any]:
        """`known`: the server was in READY (its `unavailable` is then false); a join leaves the
        field out, which is how discord.py tells `on_guild_join` from `on_guild_available`."""
        joined = _iso(_now())
        role = self._role_payload(
            guild.bot_role_id, "imagine-bot", permissions=guild.bot_role_permissions, position=1
        )
        role["managed"] = True
        role["tags"] = {"bot_id": str(self.bot_user_id)}
        everyone = self._role_payload(
            guild.id, "@everyone", permissions=guild.everyone_permissions, position=0
        )
        return {
            "id": str(guild.id),
            "name": "New Guild",
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
            "preferred_locale": guild.preferred_locale,
            "system_channel_id": (
                str(guild.system_channel_id) if guild.system_channel_id is not None else None
            ),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "max_members": 500_000,
            "features": [],
            "roles": [everyone, role],
            "emojis": [],
            "stickers": [],
            "joined_at": joined,
            "large": False,
            **({"unavailable": False} if known else {}),
            "lazy": True,
            "member_count": 2,
            "members": [
                {
                    "user": self._bot_user(),
                    "roles": [str(guild.bot_role_id)],
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
            "channels": [self._joined_text_channel(guild)],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }
