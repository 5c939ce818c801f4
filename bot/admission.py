"""Admitting a request: every rule a generation must pass before anything is spent.

One entry serves `/imagine` and the result buttons. The operator's rules come first (is the bot
enabled in this server, is the server or the member banned everywhere, are DMs on, is generation
paused), then the server's (channels, bans, blocked terms) and the operator's global terms, then
the limits of the day (quota, budget, caps). Each is one indexed read, so a refusal can be the
interaction's first, private answer and leave no public trace.

Every refusal is counted per server and reason for `/owner servers` and in the metrics, and
logged once (reason, server, member; never the prompt). The row in the server's moderation log
and the audit-channel post come at most once per member and reason every ten minutes (the
counter has the rest), so a member hammering a command cannot flood either.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from bot.admin_events import AuditEvent, AuditKind, AuditSink
from bot.domain import Hold, LogKind, OverLimit
from bot.metrics import Metrics
from bot.moderation import Moderation, RefusalKind
from bot.operator import OperatorControls, guild_key
from bot.quota import BudgetStatus, QuotaBook, QuotaStatus
from bot.store import JobLedger, ModerationRecords

log = logging.getLogger(__name__)

FIRST_ANSWER_SECONDS = 2.0  # of Discord's 3 s to acknowledge, the most the checks may take
NOTICE_EVERY = 600.0  # one audit post per member and reason in this time
_NOTICES_KEPT = 10_000  # bounded memory for the throttle under a flood of distinct members


class RefusalReason(enum.StrEnum):
    NOT_ENABLED = "not_enabled"  # the server is not in ALLOWED_GUILD_IDS
    SERVER_BANNED = "server_banned"  # the owner banned the server
    DMS_OFF = "dms_off"  # ALLOW_DMS is false
    USER_BANNED = "user_banned"  # banned by the owner, or (in DMs) by a server the bot is in
    PAUSED = "paused"  # the owner paused generation
    WRONG_CHANNEL = "wrong_channel"
    BANNED = "banned"  # banned by this server's managers
    BLOCKED_TERM = "blocked_term"  # this server's blocklist
    GLOBAL_TERM = "global_term"  # the operator's blocklist
    QUOTA = "quota"
    BUDGET = "budget"
    SERVER_CAP = "server_cap"
    TOTAL_CAP = "total_cap"
    NO_SERVER_KEY = "no_server_key"  # REQUIRE_SERVER_KEYS and this server has no kie.ai key
    SHUTTING_DOWN = "shutting_down"  # the bot is stopping: not counted, not recorded


# Refusals a server's managers hear about in their audit channel, and the kind they are kept
# under in its moderation log (None: not a moderation event).
_AUDITED: dict[RefusalReason, tuple[AuditKind, LogKind | None]] = {
    RefusalReason.BANNED: (AuditKind.BANNED_REFUSED, LogKind.REFUSED_BANNED),
    RefusalReason.BLOCKED_TERM: (AuditKind.PROMPT_REFUSED, LogKind.REFUSED_BLOCKED_TERM),
    RefusalReason.GLOBAL_TERM: (AuditKind.GLOBAL_TERM_REFUSED, LogKind.REFUSED_GLOBAL_TERM),
    RefusalReason.USER_BANNED: (AuditKind.USER_BANNED_REFUSED, LogKind.REFUSED_USER_BANNED),
    RefusalReason.SERVER_CAP: (AuditKind.SERVER_CAP_REACHED, None),
}
_BY_MODERATION = {
    RefusalKind.WRONG_CHANNEL: RefusalReason.WRONG_CHANNEL,
    RefusalKind.BANNED: RefusalReason.BANNED,
    RefusalKind.BLOCKED_TERM: RefusalReason.BLOCKED_TERM,
    RefusalKind.GLOBAL_TERM: RefusalReason.GLOBAL_TERM,
}
_BY_OVER_LIMIT = {
    OverLimit.QUOTA: RefusalReason.QUOTA,
    OverLimit.BUDGET: RefusalReason.BUDGET,
    OverLimit.SERVER_CAP: RefusalReason.SERVER_CAP,
    OverLimit.TOTAL_CAP: RefusalReason.TOTAL_CAP,
}


@dataclass(frozen=True)
class Asker:
    """Who asks, where, and for what: all admission needs of a request."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    role_ids: tuple[int, ...] = ()
    prompt: str | None = None  # None: not a generation (another command, a Delete press)
    units: int = 0  # what the generation would cost (0: nothing is charged)


@dataclass(frozen=True)
class Refusal:
    reason: RefusalReason
    term: str | None = None  # the blocked term, as it was typed when blocked
    excerpt: str | None = None  # what in the prompt matched it
    channels: tuple[int, ...] = ()  # where /imagine works instead
    note: str | None = None  # the operator's reason for a pause
    quota: QuotaStatus | None = None
    budget: BudgetStatus | None = None  # the server's budget or cap, as it stands
    cost: int = 0
    resets_at: datetime | None = None


class Admission:
    """Every rule a request must pass, and what happens after a refusal.

    Holds no state but the notice throttle. Called by `Generation` (for every image asked for)
    and by the bot's command tree (`gate`, for every command); built once by the composition
    root and lives as long as the process. Refusals worth a server's attention are posted
    through the `AuditSink` the Discord side provides.
    """

    def __init__(
        self,
        ledger: JobLedger,
        records: ModerationRecords,
        operator: OperatorControls,
        moderation: Moderation,
        quota: QuotaBook,
        *,
        allowed_guilds: frozenset[int],
        allow_dms: bool,
        shares_server: Callable[[int], bool],
        audit: AuditSink,
        alert_total_cap: Callable[[], Awaitable[bool]],
        metrics: Metrics | None = None,
        needs_server_key: Callable[[int | None], bool] = lambda guild_id: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._needs_server_key = needs_server_key  # REQUIRE_SERVER_KEYS (`KieAccounts.refuses`)
        self._metrics = metrics
        self._records = records
        self._operator = operator
        self._moderation = moderation
        self._quota = quota
        self._alert_total_cap = alert_total_cap
        self._allowed_guilds = allowed_guilds
        self._allow_dms = allow_dms
        self._shares_server = shares_server
        self._audit = audit
        self._clock = clock
        self._noticed: dict[tuple[object, ...], float] = {}
        # Past this, the interaction is acknowledged before the checks end (see the cogs).
        self.answer_within = FIRST_ANSWER_SECONDS

    async def gate(self, guild_id: int | None) -> Refusal | None:
        """The rules for every command: is the bot enabled here at all."""
        if guild_id is None:
            return None if self._allow_dms else Refusal(RefusalReason.DMS_OFF)
        if self._allowed_guilds and guild_id not in self._allowed_guilds:
            return Refusal(RefusalReason.NOT_ENABLED)
        if await self._operator.server_banned(guild_id):
            return Refusal(RefusalReason.SERVER_BANNED)
        return None

    async def check(self, asker: Asker, hold: Hold | None = None) -> Refusal | None:
        """Every rule a generation must pass before it is charged; None: go ahead.

        Reads only: the charge itself (`JobService.reserve`) checks the limits again, atomically.
        `hold` is this request's place among the member's commands (`JobService.hold`): the
        limits count the member's earlier ones, even those not charged yet.
        """
        refusal = await self.gate(asker.guild_id)
        if refusal is not None:
            return refusal
        if await self._banned_everywhere(asker.user_id, asker.guild_id):
            return Refusal(RefusalReason.USER_BANNED)
        gate = self._operator.gate
        if gate.paused:
            return Refusal(RefusalReason.PAUSED, note=gate.reason)
        if asker.units and self._needs_server_key(asker.guild_id):
            return Refusal(RefusalReason.NO_SERVER_KEY)
        if asker.prompt is not None:
            moderated = await self._moderation.check(
                asker.guild_id, asker.channel_id, asker.user_id, asker.prompt
            )
            if moderated is not None:
                return Refusal(
                    _BY_MODERATION[moderated.kind],
                    term=moderated.term,
                    excerpt=moderated.excerpt,
                    channels=moderated.channels,
                )
            if not asker.units:
                return None  # nothing to charge (a result shown again): no limit applies
            limits = await self._quota.spend_limits(asker.guild_id, asker.role_ids)
            over = await self._ledger.over_limit(
                asker.user_id, asker.guild_id, self._quota.today(), asker.units, limits, hold
            )
            if over is not None:
                return await self.over_limit(asker, over)
        return None

    async def over_limit(self, asker: Asker, over: OverLimit) -> Refusal:
        """The refusal for a limit the charge would exceed, with the figures to show."""
        reason = _BY_OVER_LIMIT[over]
        quota = budget = None
        if reason is RefusalReason.QUOTA:
            quota = await self._quota.member_status(asker.user_id, asker.guild_id, asker.role_ids)
        elif reason in (RefusalReason.BUDGET, RefusalReason.SERVER_CAP):
            budget = await self._quota.budget_status(asker.guild_id)
        return Refusal(
            reason, quota=quota, budget=budget, cost=asker.units, resets_at=self._quota.next_reset()
        )

    async def record(self, asker: Asker, refusal: Refusal) -> None:
        """After the member was told: count the refusal, and tell whoever should know, without
        letting one member flood the log or the audit channel."""
        reason = refusal.reason
        if reason is RefusalReason.SHUTTING_DOWN:
            return  # not a rule of anyone's: the bot is stopping for a moment
        if self._metrics is not None:
            self._metrics.refused(reason.value)
        if reason is RefusalReason.NOT_ENABLED:
            # Nothing is stored for a server the bot is not enabled in: one log line a day.
            if self._first_notice(("not_enabled", asker.guild_id, self._quota.today()), 86400):
                log.info(
                    "refused a command in server %s: not in ALLOWED_GUILD_IDS (once a day)",
                    asker.guild_id,
                    extra={
                        "guild_id": asker.guild_id,
                        "outcome": "refused",
                        "reason": "not_enabled",
                    },
                )
            return
        await self._records.count_refusal(self._quota.today(), guild_key(asker.guild_id), reason)
        # One line for each refusal (never the prompt): a member's burst is still a line each,
        # since each is a command they sent; the audit channel below is what is throttled.
        log.info(
            "refused member %s in %s: %s",
            asker.user_id,
            f"server {asker.guild_id}" if asker.guild_id else "DMs",
            reason.value,
            extra={
                "guild_id": asker.guild_id,
                "user_id": asker.user_id,
                "outcome": "refused",
                "reason": reason.value,
            },
        )
        if reason is RefusalReason.TOTAL_CAP:
            await self._alert_total_cap()  # at most once an hour, however many are refused
        if not self._first_notice((asker.guild_id, asker.user_id, reason), NOTICE_EVERY):
            return
        audited = _AUDITED.get(reason)
        if audited is None or asker.guild_id is None:
            return
        audit_kind, kind = audited
        prompt = asker.prompt or ""
        detail = f"{refusal.term}: {prompt}" if refusal.term else prompt
        if kind is not None:
            await self._moderation.record_refusal(asker.guild_id, asker.user_id, kind, detail)
        await self._audit.post(AuditEvent(audit_kind, asker.guild_id, asker.user_id, None, detail))

    async def _banned_everywhere(self, user_id: int, guild_id: int | None) -> bool:
        if await self._operator.user_banned(user_id):
            return True
        if guild_id is not None:
            return False
        # DMs are never a way around a server's ban: any server the bot is still in counts.
        return any(self._shares_server(g) for g in await self._records.servers_banning(user_id))

    def _first_notice(self, key: tuple[object, ...], every: float) -> bool:
        now = self._clock()
        if now - self._noticed.get(key, float("-inf")) < every:
            return False
        if len(self._noticed) >= _NOTICES_KEPT:
            cutoff = now - 86400
            self._noticed = {k: t for k, t in self._noticed.items() if t > cutoff}
            if len(self._noticed) >= _NOTICES_KEPT:
                self._noticed.clear()
        self._noticed[key] = now
        return True
