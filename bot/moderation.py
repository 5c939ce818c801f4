"""Per-server moderation: blocked terms, banned members, and the record of both.

Checked before anything is spent. Every admin change and every refused prompt is written to the
moderation log, so an admin can always see what happened and who did it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

from bot.blocklist import BlockMatch, BlockRule, UnusableTerm, find_blocked, normalize_term
from bot.changes import Announce, Topic, unshared
from bot.domain import ChangeRefused, LogKind, RefusedChange
from bot.readthrough import ReadThrough
from bot.store import ModerationRecords, ServerSettings

log = logging.getLogger(__name__)

MAX_TERMS = 500
# Matching is pure Python and grows with the prompt: 5000 characters took up to 80 ms on a busy
# 2-core machine. A long prompt is matched in a thread, where Python yields the GIL every few
# milliseconds, so the event loop keeps running; a short one (a fifth of that at most) inline.
LONG_PROMPT = 1000


async def blocked_in(prompt: str, rules: tuple[BlockRule, ...]) -> BlockMatch | None:
    """`find_blocked`, off the event loop for a long prompt."""
    if not rules:
        return None
    if len(prompt) <= LONG_PROMPT:
        return find_blocked(prompt, rules)
    return await asyncio.to_thread(find_blocked, prompt, rules)


class RefusalKind(enum.StrEnum):
    BANNED = "banned"
    BLOCKED_TERM = "blocked_term"
    GLOBAL_TERM = "global_term"  # on the operator's list, which applies everywhere
    WRONG_CHANNEL = "wrong_channel"


@dataclass(frozen=True)
class Refusal:
    kind: RefusalKind
    term: str | None = None  # the blocked term, as the admin typed it
    excerpt: str | None = None  # what the member wrote that matched
    channels: tuple[int, ...] = ()  # where /imagine may be used instead


class ModerationError(ChangeRefused):
    """An admin's request cannot be carried out; its reason says why."""


class Moderation:
    """A server's rules for prompts and people: blocked terms, banned members, allowed channels,
    the audit channel, and the operator's terms that apply everywhere.

    One per process, for the bot's lifetime. `Admission` asks it whether a prompt may run
    (`check`); `AdminEvents` makes every change through it (which writes the moderation log);
    the audit sink reads the audit channel from it. The rules are cached per server and
    dropped on each change, so a check costs no query.
    """

    def __init__(
        self, records: ModerationRecords, settings: ServerSettings, announce: Announce = unshared
    ) -> None:
        self._records = records
        self._settings = settings
        self._announce = announce  # tells the other processes sharing the database
        # Terms per server, read once and dropped on every change: checks stay cheap.
        self._rules = ReadThrough(self._read_rules)
        self._global_rules = ReadThrough(self._read_global_rules)  # the operator's (key None)
        # Allowed channels, banned members and the audit channel per server, the same way (read
        # on every request or job; only this class changes them; another process's change
        # arrives as `reload`).
        self._channels = ReadThrough(settings.allowed_channels)
        self._bans = ReadThrough(records.banned_members)
        self._audit = ReadThrough(settings.audit_channel)

    async def check(
        self, guild_id: int | None, channel_id: int | None, user_id: int, prompt: str
    ) -> Refusal | None:
        """Why this prompt may not be generated here, or None. Reads only: a refusal is
        recorded, at a bounded rate, by `Admission.record`.

        A server's own rules apply in that server; the operator's terms apply everywhere,
        direct messages included.
        """
        if guild_id is not None:
            refusal = await self._server_check(guild_id, channel_id, user_id, prompt)
            if refusal is not None:
                return refusal
        match = await blocked_in(prompt, await self._global_rules_now())
        if match is None:
            return None
        return Refusal(RefusalKind.GLOBAL_TERM, match.rule.term, match.excerpt)

    async def record_refusal(self, guild_id: int, user_id: int, kind: LogKind, detail: str) -> None:
        """Keep a refused prompt in the server's moderation log (the caller bounds the rate)."""
        await self._records.log_moderation(guild_id, user_id, kind, detail)

    async def _server_check(
        self, guild_id: int, channel_id: int | None, user_id: int, prompt: str
    ) -> Refusal | None:
        allowed = await self.allowed_channels(guild_id)
        if allowed and channel_id not in allowed:
            return Refusal(RefusalKind.WRONG_CHANNEL, channels=tuple(allowed))
        if user_id in await self._banned_in(guild_id):
            return Refusal(RefusalKind.BANNED)
        match = await blocked_in(prompt, await self._rules_for(guild_id))
        if match is None:
            return None
        return Refusal(RefusalKind.BLOCKED_TERM, match.rule.term, match.excerpt)

    async def _global_rules_now(self) -> tuple[BlockRule, ...]:
        return await self._global_rules.get(None)

    async def _read_global_rules(self, _: None) -> tuple[BlockRule, ...]:
        return tuple(BlockRule(term) for term in await self._records.global_terms())

    async def add_global_term(self, term: str) -> bool:
        """The operator blocks `term` everywhere. False if it was already blocked."""
        canonical = _canonical(term)
        if len(await self._global_rules_now()) >= MAX_TERMS:
            raise ModerationError(RefusedChange.BOT_TERMS_FULL, limit=MAX_TERMS)
        added = await self._records.add_global_term(canonical, term.strip())
        self._global_rules.drop()
        await self._announce(Topic.MODERATION)
        return added

    async def remove_global_term(self, term: str) -> bool:
        removed = await self._records.remove_global_term(_canonical(term))
        self._global_rules.drop()
        await self._announce(Topic.MODERATION)
        return removed

    async def global_terms(self) -> list[str]:
        return [rule.term for rule in await self._global_rules_now()]

    async def _rules_for(self, guild_id: int) -> tuple[BlockRule, ...]:
        return await self._rules.get(guild_id)

    async def _read_rules(self, guild_id: int) -> tuple[BlockRule, ...]:
        return tuple(BlockRule(term) for term in await self._records.blocked_terms(guild_id))

    async def add_term(self, guild_id: int, term: str, actor: int) -> bool:
        """Block `term` in this server. False if it (or a spelling of it) was already blocked."""
        canonical = _canonical(term)
        if len(await self.terms(guild_id)) >= MAX_TERMS:
            raise ModerationError(RefusedChange.SERVER_TERMS_FULL, limit=MAX_TERMS)
        added = await self._records.add_blocked_term(guild_id, canonical, term.strip(), actor)
        if added:
            self._rules.drop(guild_id)
            await self._announce(Topic.MODERATION)
            await self._records.log_moderation(guild_id, actor, LogKind.TERM_ADDED, term, actor)
        return added

    async def remove_term(self, guild_id: int, term: str, actor: int) -> bool:
        canonical = _canonical(term)
        removed = await self._records.remove_blocked_term(guild_id, canonical)
        if removed:
            self._rules.drop(guild_id)
            await self._announce(Topic.MODERATION)
            await self._records.log_moderation(guild_id, actor, LogKind.TERM_REMOVED, term, actor)
        return removed

    async def terms(self, guild_id: int) -> list[str]:
        return [rule.term for rule in await self._rules_for(guild_id)]

    async def ban(self, guild_id: int, user_id: int, actor: int, reason: str | None) -> bool:
        if user_id == actor:
            raise ModerationError(RefusedChange.BAN_SELF)
        banned = await self._records.ban(guild_id, user_id, actor, reason)
        self._bans.drop(guild_id)
        await self._announce(Topic.MODERATION)
        if banned:
            await self._records.log_moderation(
                guild_id, user_id, LogKind.BANNED, reason or "", actor
            )
        return banned

    async def unban(self, guild_id: int, user_id: int, actor: int) -> bool:
        unbanned = await self._records.unban(guild_id, user_id)
        self._bans.drop(guild_id)
        await self._announce(Topic.MODERATION)
        if unbanned:
            await self._records.log_moderation(guild_id, user_id, LogKind.UNBANNED, "", actor)
        return unbanned

    async def set_audit_channel(self, guild_id: int, channel_id: int | None, actor: int) -> None:
        await self._settings.set_audit_channel(guild_id, channel_id)
        self._audit.drop(guild_id)
        await self._announce(Topic.MODERATION)
        detail = str(channel_id) if channel_id else "off"
        await self._records.log_moderation(guild_id, actor, LogKind.AUDIT_CHANNEL, detail, actor)

    async def allow_channel(self, guild_id: int, channel_id: int, actor: int) -> bool:
        added = await self._settings.allow_channel(guild_id, channel_id)
        self._channels.drop(guild_id)
        await self._announce(Topic.MODERATION)
        if added:
            await self._records.log_moderation(
                guild_id, actor, LogKind.CHANNEL_ALLOWED, str(channel_id), actor
            )
        return added

    async def disallow_channel(self, guild_id: int, channel_id: int, actor: int) -> bool:
        removed = await self._settings.disallow_channel(guild_id, channel_id)
        self._channels.drop(guild_id)
        await self._announce(Topic.MODERATION)
        if removed:
            await self._records.log_moderation(
                guild_id, actor, LogKind.CHANNEL_DISALLOWED, str(channel_id), actor
            )
        return removed

    async def reload(self) -> None:
        """Another process changed some server's rules (or the operator's terms)."""
        for cache in (self._rules, self._global_rules, self._channels, self._bans, self._audit):
            cache.drop()

    async def allowed_channels(self, guild_id: int) -> list[int]:
        return await self._channels.get(guild_id)

    async def _banned_in(self, guild_id: int) -> set[int]:
        return await self._bans.get(guild_id)

    async def audit_channel(self, guild_id: int | None) -> int | None:
        if guild_id is None:
            return None
        return await self._audit.get(guild_id)


def _canonical(term: str) -> str:
    try:
        return normalize_term(term)
    except UnusableTerm as error:
        reason = RefusedChange.TERM_TOO_LONG if error.too_long else RefusedChange.TERM_TOO_SHORT
        raise ModerationError(reason, limit=error.limit) from None
