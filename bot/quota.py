"""Quota policy: what an image costs, which member limit and server budget apply, which UTC day
it counts against, and when that day ends.

A member's quota is counted per server (direct messages are their own "server"). The daily limit
is the highest quota of the member's roles that have one, else the server's default, else the
bot's default; an admin's grants for the day add to it and a reset clears what was used. The
operator's ceilings cap all of it: `MAX_MEMBER_DAILY` per member (grants included), the server's
cap (`SERVER_DAILY_CAP` or the owner's own for it) and `TOTAL_DAILY_CAP` over everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.domain import DEFAULT_MODEL, ServerPolicy, SpendLimits
from bot.kie import ImageRequest, Model, Resolution
from bot.operator import OperatorControls
from bot.store import JobLedger, ServerSettings


@dataclass(frozen=True)
class QuotaStatus:
    used: int
    limit: int  # today's limit, grants included
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True)
class BudgetStatus:
    spent: int
    budget: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.spent)


@dataclass(frozen=True)
class Costs:
    """Units per image, by model and resolution (the operator's COST_* settings)."""

    units_1k: int = 1
    units_2k: int = 2
    units_pro_1k: int = 1
    units_pro_2k: int = 1

    def units(self, model: Model, resolution: Resolution) -> int:
        if model == "pro":
            return self.units_pro_2k if resolution == "2K" else self.units_pro_1k
        return self.units_2k if resolution == "2K" else self.units_1k

    def of(self, image: ImageRequest) -> int:
        return self.units(image.model, image.resolution)


def member_limit(policy: ServerPolicy, role_ids: Iterable[int], default: int) -> int:
    """The daily limit of a member with these roles: the highest role quota they hold applies.

    A role quota may be lower than the server default (e.g. for newcomers): holding any role
    with a quota replaces the default rather than adding to it.
    """
    role_limits = [policy.role_quotas[r] for r in role_ids if r in policy.role_quotas]
    if role_limits:
        return max(role_limits)
    return policy.daily_quota if policy.daily_quota is not None else default


class QuotaBook:
    """Reads quota status from the ledger; charging itself is `JobService`'s `JobLedger.reserve`."""

    def __init__(
        self,
        ledger: JobLedger,
        settings: ServerSettings,
        operator: OperatorControls,
        *,
        daily_limit: int,
        costs: Costs,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._settings = settings
        self._operator = operator
        self.daily_limit = daily_limit  # the bot's default, where a server set none
        self.ceiling = operator.ceilings.member_daily  # no member may spend more, grants or not
        self.costs = costs
        self._clock = clock

    def today(self) -> str:
        return self.now().date().isoformat()

    def days_ago(self, days: int) -> str:
        return (self.now().date() - timedelta(days=days)).isoformat()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def next_reset(self) -> datetime:
        now = self.now()
        return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)

    async def policy(self, guild_id: int | None) -> ServerPolicy:
        if guild_id is None:
            return ServerPolicy()
        return await self._settings.server_policy(guild_id)

    async def default_model(self, guild_id: int | None) -> Model:
        """The model `/imagine` uses where the member names none: the server's choice, or flex."""
        return (await self.policy(guild_id)).default_model or DEFAULT_MODEL

    async def limit_for(self, guild_id: int | None, role_ids: Iterable[int]) -> int:
        return self.limit_in(await self.policy(guild_id), role_ids)

    def limit_in(self, policy: ServerPolicy, role_ids: Iterable[int]) -> int:
        return member_limit(policy, role_ids, self.daily_limit)

    async def spend_limits(
        self, guild_id: int | None, role_ids: Iterable[int], policy: ServerPolicy | None = None
    ) -> SpendLimits:
        """Every limit a charge by this member here must stay within today."""
        policy = policy if policy is not None else await self.policy(guild_id)
        total = self._operator.ceilings.total_daily
        return SpendLimits(
            member=self.limit_in(policy, role_ids),
            member_ceiling=self.ceiling,
            server_budget=policy.daily_budget,
            server_cap=await self._operator.server_cap(guild_id),
            total_cap=total or None,
        )

    async def server_cap(self, guild_id: int | None) -> int | None:
        return await self._operator.server_cap(guild_id)

    async def limit_today(self, user_id: int, guild_id: int, role_ids: Iterable[int]) -> int:
        """The member's limit today with grants, before the operator's ceiling."""
        usage = await self._ledger.usage(user_id, guild_id, self.today())
        return await self.limit_for(guild_id, role_ids) + usage.granted

    def month_start(self) -> str:
        return self.now().date().replace(day=1).isoformat()

    async def status(self, user_id: int, guild_id: int | None, limit: int) -> QuotaStatus:
        """Today's usage against `limit` (the member's limit from `limit_for`), grants added and
        the operator's ceiling applied."""
        usage = await self._ledger.usage(user_id, guild_id, self.today())
        today = SpendLimits(member=limit, member_ceiling=self.ceiling).member_limit(usage.granted)
        return QuotaStatus(used=usage.used, limit=today, resets_at=self.next_reset())

    async def member_status(
        self, user_id: int, guild_id: int | None, role_ids: Iterable[int]
    ) -> QuotaStatus:
        return await self.status(user_id, guild_id, await self.limit_for(guild_id, role_ids))

    async def budget_status(self, guild_id: int | None) -> BudgetStatus | None:
        """What the server (or all DMs) may still spend today: the lower of its own budget and
        the operator's cap for it; None when neither applies."""
        limits = [await self._operator.server_cap(guild_id)]
        if guild_id is not None:
            limits.append((await self.policy(guild_id)).daily_budget)
        caps = [limit for limit in limits if limit is not None]
        if not caps:
            return None
        spent = await self._ledger.server_units(guild_id, self.today())
        return BudgetStatus(spent=spent, budget=min(caps), resets_at=self.next_reset())
