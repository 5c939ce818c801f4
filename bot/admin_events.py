"""Admin changes as events: every change a server's managers make is stored and posted in one call.

A cog never writes a server's setting, blocklist or ban list itself, nor posts to the audit
channel: it calls one `AdminEvents` method, which makes the change through the service that
owns it (`ServerAdmin`, `Moderation`, `JobService`; they write the server's moderation log) and
then posts the `AuditEvent` to the server's audit channel through an `AuditSink`, which the
Discord side provides (`bot/ui/audit.py`). So a new command cannot forget either half.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Protocol

from bot.accounts import KeyRefusal, KeySaved, KieAccounts
from bot.domain import Job, LogKind, Model
from bot.jobs import JobService
from bot.moderation import Moderation
from bot.policy import ServerAdmin, Setting
from bot.quota import QuotaStatus

log = logging.getLogger(__name__)


class AuditKind(enum.StrEnum):
    """What an audit-channel post is about; its title is the Discord side's (`bot/ui/audit.py`)."""

    # Changes a server's managers make.
    SETTING_CHANGED = "setting_changed"
    ROLE_QUOTA_CHANGED = "role_quota_changed"
    UNITS_GRANTED = "units_granted"
    QUOTA_RESET = "quota_reset"
    TERM_BLOCKED = "term_blocked"
    TERM_UNBLOCKED = "term_unblocked"
    MEMBER_BANNED = "member_banned"
    MEMBER_UNBANNED = "member_unbanned"
    RESULT_DELETED = "result_deleted"  # by someone other than the requester
    # Changes kept in the moderation log only (the channel settings show in /server settings).
    AUDIT_CHANNEL_SET = "audit_channel_set"
    CHANNEL_ALLOWED = "channel_allowed"
    CHANNEL_DISALLOWED = "channel_disallowed"
    # Refusals a server's managers hear about (see `bot/admission.py`).
    BANNED_REFUSED = "banned_refused"
    PROMPT_REFUSED = "prompt_refused"
    GLOBAL_TERM_REFUSED = "global_term_refused"
    USER_BANNED_REFUSED = "user_banned_refused"
    SERVER_CAP_REACHED = "server_cap_reached"
    # The server's own kie.ai key (`/server kie-key`): never the key, only its last four.
    KIE_KEY_SET = "kie_key_set"
    KIE_KEY_REMOVED = "kie_key_removed"
    KIE_KEY_FAILED = "kie_key_failed"  # kie.ai refused it, or its account is out of credits
    KIE_KEY_LOW = "kie_key_low"  # its account's balance fell below LOW_CREDITS_WARNING


# The kinds that are stored but not posted.
_NOT_POSTED = frozenset(
    {AuditKind.AUDIT_CHANNEL_SET, AuditKind.CHANNEL_ALLOWED, AuditKind.CHANNEL_DISALLOWED}
)


@dataclass(frozen=True)
class AuditEvent:
    """One line in a server's audit channel, in data; the words are the Discord side's."""

    kind: AuditKind
    guild_id: int
    member_id: int  # who it is about (the admin themself for a server-wide change)
    actor_id: int | None  # who did it; None for a refusal
    detail: str = ""  # as typed: a term, a reason, a prompt, a role's change
    setting: LogKind | None = None  # SETTING_CHANGED: the setting, as the log keeps it
    value: str | None = None  # ... and its new value; UNITS_GRANTED: the units


class AuditSink(Protocol):
    """Posts an event to the server's audit channel, when it has one; best effort."""

    async def post(self, event: AuditEvent) -> None: ...


class AdminEvents:
    """The one entry for every change a server's managers make (and a result's deletion).

    Owns nothing but the order "store, then post": each method changes state through the
    service that owns it and posts the matching `AuditEvent` through the sink. Built once by
    the composition root (`bot/__main__.py`) and called by the admin cogs (`/server`,
    `/moderation`) and the Delete button; lives as long as the process. Errors the services
    raise for a change the rules do not allow (`PolicyError`, `ModerationError`) pass through
    untouched, before anything is stored or posted.
    """

    def __init__(
        self, admin: ServerAdmin, moderation: Moderation, jobs: JobService, sink: AuditSink
    ) -> None:
        self._admin = admin
        self._moderation = moderation
        self._jobs = jobs
        self._sink = sink

    async def record(self, event: AuditEvent) -> None:
        """Log and post an event whose change is already stored (or that changes nothing)."""
        # One line per change: who, what, on whom; never `detail` (a term, a reason, a prompt).
        what = (
            f"{event.kind.value} {event.setting.value}={event.value}"
            if event.setting
            else (event.kind.value)
        )
        log.info(
            "admin change in server %s by %s: %s (member %s)",
            event.guild_id,
            event.actor_id,
            what,
            event.member_id,
            extra={
                "guild_id": event.guild_id,
                "user_id": event.member_id,
                "actor_id": event.actor_id,
                "change": event.kind.value,
            },
        )
        if event.kind not in _NOT_POSTED:
            await self._sink.post(event)

    # --- /server --------------------------------------------------------------------------

    async def set_kie_key(self, guild_id: int, key: str, actor: int) -> KeySaved | KeyRefusal:
        """Check and keep the server's own kie.ai key; posted with its last four only."""
        accounts = self._accounts()
        saved = await accounts.save(guild_id, key, actor)
        if isinstance(saved, KeySaved):
            await self.record(
                AuditEvent(AuditKind.KIE_KEY_SET, guild_id, actor, actor, value=saved.last_four)
            )
        return saved

    async def remove_kie_key(self, guild_id: int, actor: int) -> bool:
        removed = await self._accounts().remove(guild_id)
        if removed:
            await self.record(AuditEvent(AuditKind.KIE_KEY_REMOVED, guild_id, actor, actor))
        return removed

    async def kie_key_failed(self, guild_id: int, kind: str) -> bool:
        """The server's own key failed a job (refused, out of credits): its managers are told
        in the audit channel, not the operator. Always False: the operator was not alerted
        (the member's failure message must not say so)."""
        await self.record(AuditEvent(AuditKind.KIE_KEY_FAILED, guild_id, 0, None, value=kind))
        return False

    async def kie_key_low(self, guild_id: int, credits: float) -> None:
        """The server's own kie.ai account is running low: its managers are told."""
        event = AuditEvent(AuditKind.KIE_KEY_LOW, guild_id, 0, None, value=f"{credits:,.0f}")
        await self.record(event)

    def _accounts(self) -> KieAccounts:
        if self._jobs.accounts is None:
            raise RuntimeError("the bot was built without kie.ai accounts")
        return self._jobs.accounts

    async def set_value(
        self, guild_id: int, setting: Setting, value: int | None, actor: int
    ) -> None:
        await self._admin.set_value(guild_id, setting, value, actor)
        shown = "default" if value is None else str(value)
        await self._setting_changed(guild_id, actor, LogKind(setting.value), shown)

    async def set_running_limits(
        self, guild_id: int, per_member: int | None, server: int | None, actor: int
    ) -> None:
        """Change the running limits given (0: the bot's default), and apply them at once to the
        jobs already waiting in the server."""
        for setting, value in (
            (Setting.MAX_RUNNING_PER_MEMBER, per_member),
            (Setting.MAX_RUNNING, server),
        ):
            if value is not None:
                await self._admin.set_value(guild_id, setting, value or None, actor)
                shown = str(value) if value else "default"
                await self._setting_changed(guild_id, actor, LogKind(setting.value), shown)
        await self._jobs.limits_changed(guild_id)

    async def set_role_quota(
        self, guild_id: int, role_id: int, role_name: str, units: int | None, actor: int
    ) -> bool:
        """False when nothing changed."""
        change = await self._admin.set_role_quota(guild_id, role_id, role_name, units, actor)
        if change is None:
            return False
        await self.record(AuditEvent(AuditKind.ROLE_QUOTA_CHANGED, guild_id, actor, actor, change))
        return True

    async def grant(
        self, guild_id: int, member_id: int, role_ids: tuple[int, ...], units: int, actor: int
    ) -> QuotaStatus:
        status = await self._admin.grant(guild_id, member_id, role_ids, units, actor)
        event = AuditEvent(AuditKind.UNITS_GRANTED, guild_id, member_id, actor, value=str(units))
        await self.record(event)
        return status

    async def reset(
        self, guild_id: int, member_id: int, role_ids: tuple[int, ...], actor: int
    ) -> QuotaStatus:
        status = await self._admin.reset(guild_id, member_id, role_ids, actor)
        await self.record(AuditEvent(AuditKind.QUOTA_RESET, guild_id, member_id, actor))
        return status

    async def set_nsfw(
        self, guild_id: int, allow: bool | None, spoiler: bool | None, actor: int
    ) -> None:
        for name, shown in await self._admin.set_nsfw(guild_id, allow, spoiler, actor):
            await self._setting_changed(guild_id, actor, LogKind(name), shown)

    async def set_default_model(self, guild_id: int, model: Model | None, actor: int) -> None:
        shown = await self._admin.set_default_model(guild_id, model, actor)
        await self._setting_changed(guild_id, actor, LogKind.DEFAULT_MODEL, shown)

    async def _setting_changed(
        self, guild_id: int, actor: int, setting: LogKind, shown: str
    ) -> None:
        event = AuditEvent(
            AuditKind.SETTING_CHANGED, guild_id, actor, actor, setting=setting, value=shown
        )
        await self.record(event)

    # --- /moderation ----------------------------------------------------------------------

    async def block_term(self, guild_id: int, term: str, actor: int) -> bool:
        """False when the term was already blocked."""
        added = await self._moderation.add_term(guild_id, term, actor)
        if added:
            await self.record(AuditEvent(AuditKind.TERM_BLOCKED, guild_id, actor, actor, term))
        return added

    async def unblock_term(self, guild_id: int, term: str, actor: int) -> bool:
        """False when the term was not blocked."""
        removed = await self._moderation.remove_term(guild_id, term, actor)
        if removed:
            await self.record(AuditEvent(AuditKind.TERM_UNBLOCKED, guild_id, actor, actor, term))
        return removed

    async def ban(self, guild_id: int, member_id: int, actor: int, reason: str | None) -> bool:
        """False when the member was already banned."""
        banned = await self._moderation.ban(guild_id, member_id, actor, reason)
        if banned:
            event = AuditEvent(AuditKind.MEMBER_BANNED, guild_id, member_id, actor, reason or "")
            await self.record(event)
        return banned

    async def unban(self, guild_id: int, member_id: int, actor: int) -> bool:
        """False when the member was not banned."""
        unbanned = await self._moderation.unban(guild_id, member_id, actor)
        if unbanned:
            await self.record(AuditEvent(AuditKind.MEMBER_UNBANNED, guild_id, member_id, actor))
        return unbanned

    async def set_audit_channel(self, guild_id: int, channel_id: int | None, actor: int) -> None:
        await self._moderation.set_audit_channel(guild_id, channel_id, actor)
        await self.record(AuditEvent(AuditKind.AUDIT_CHANNEL_SET, guild_id, actor, actor))

    async def allow_channel(self, guild_id: int, channel_id: int, actor: int) -> None:
        await self._moderation.allow_channel(guild_id, channel_id, actor)
        await self.record(AuditEvent(AuditKind.CHANNEL_ALLOWED, guild_id, actor, actor))

    async def disallow_channel(self, guild_id: int, channel_id: int, actor: int) -> None:
        await self._moderation.disallow_channel(guild_id, channel_id, actor)
        await self.record(AuditEvent(AuditKind.CHANNEL_DISALLOWED, guild_id, actor, actor))

    # --- the Delete button ----------------------------------------------------------------

    async def result_deleted(self, job: Job, guild_id: int | None, actor: int) -> None:
        """A result's message is gone: mark it, and tell the server's managers when someone
        other than the requester removed it."""
        await self._jobs.mark_result_deleted(job.id)
        if actor != job.user_id and guild_id is not None:
            event = AuditEvent(
                AuditKind.RESULT_DELETED, guild_id, job.user_id, actor, job.image.prompt
            )
            await self.record(event)
