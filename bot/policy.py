"""Per-server policy that admins set: quotas, role quotas, grants and resets, the daily budget,
and how many jobs may run at once.

Every change is written to the server's moderation log with who made it, so `/server settings`
can show it back; settings are keyed by server, so one server's never touch another's. No setting
may go past the operator's ceilings (`MAX_MEMBER_DAILY`, the server's daily cap): a change that
asks for more is refused with the ceiling named.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bot.domain import (
    DEFAULT_MODEL,
    AdjustmentKind,
    ChangeRefused,
    LogEntry,
    LogKind,
    Model,
    RefusedChange,
    ServerPolicy,
)
from bot.quota import QuotaBook, QuotaStatus
from bot.runqueue import RunLimits
from bot.store import JobLedger, ModerationRecords, ServerSettings

MAX_UNITS = 10_000  # a sane ceiling for any quota, grant or budget an admin types
MAX_RUNNING = 100  # kie.ai runs "about 100+" tasks at once per account


class PolicyError(ChangeRefused):
    """A change the operator's ceilings do not allow; its reason says which."""


class Setting(enum.StrEnum):
    """The one-number settings, named as `ServerPolicy`'s fields."""

    DAILY_QUOTA = "daily_quota"
    DAILY_BUDGET = "daily_budget"
    MAX_RUNNING_PER_MEMBER = "max_running_per_member"
    MAX_RUNNING = "max_running"


@dataclass(frozen=True)
class PolicyView:
    """Everything `/server settings` shows."""

    policy: ServerPolicy
    default_quota: int  # the bot's, where the server set none
    run_limits: RunLimits  # the effective ones, the bot's defaults filled in
    member_ceiling: int  # the operator's MAX_MEMBER_DAILY
    server_cap: int | None  # the operator's daily cap for this server
    nsfw_permitted: bool  # the operator's ALLOW_NSFW
    allowed_channels: list[int]
    audit_channel: int | None
    blocked_terms: int
    recent_changes: list[LogEntry]


class ServerAdmin:
    """The changes server managers make to their server's policy: quotas, role quotas, grants,
    resets, the budget, running limits, the default model and the adult-content switches.

    One per process. `AdminEvents` calls it for each `/server` change; `/server settings`
    reads `view`. Every change is checked against the operator's ceilings before anything is
    stored, and written to the moderation log with who made it.
    """

    def __init__(
        self,
        settings: ServerSettings,
        records: ModerationRecords,
        ledger: JobLedger,
        quota: QuotaBook,
        *,
        nsfw_permitted: bool = False,
    ) -> None:
        self._settings = settings
        self._records = records
        self._ledger = ledger
        self._quota = quota
        self._nsfw_permitted = nsfw_permitted

    async def set_value(
        self, guild_id: int, setting: Setting, value: int | None, actor: int
    ) -> None:
        """Set one number (None: back to the bot's default, or no budget).

        Raises `PolicyError` for a quota above the operator's ceiling or a budget above the
        server's cap.
        """
        if value is not None and setting is Setting.DAILY_QUOTA:
            self._check_member_units(value)
        if value is not None and setting is Setting.DAILY_BUDGET:
            cap = await self._quota.server_cap(guild_id)
            if cap is not None and value > cap:
                raise PolicyError(RefusedChange.BUDGET_OVER_CAP, limit=cap, asked=value)
        await self._settings.set_policy_value(guild_id, setting.value, value)
        shown = "default" if value is None else str(value)
        kind = LogKind(setting.value)  # the setting's own name
        await self._records.log_moderation(guild_id, actor, kind, shown, actor)

    async def set_role_quota(
        self, guild_id: int, role_id: int, role_name: str, units: int | None, actor: int
    ) -> str | None:
        """Set or (None) remove a role's quota; what changed, in words, or None if nothing.

        By the role's name: the log is shown as plain text, where a mention would not render.
        """
        if units is not None:
            self._check_member_units(units)
        if not await self._settings.set_role_quota(guild_id, role_id, units):
            return None
        change = f"{role_name}: {'removed' if units is None else units}"
        await self._records.log_moderation(guild_id, actor, LogKind.ROLE_QUOTA, change, actor)
        return change

    async def grant(
        self, guild_id: int, user_id: int, role_ids: tuple[int, ...], units: int, actor: int
    ) -> QuotaStatus:
        """Extra units for today only, on top of the member's limit, up to the ceiling."""
        ceiling = self._quota.ceiling
        today = await self._quota.limit_today(user_id, guild_id, role_ids)
        if today + units > ceiling:
            raise PolicyError(
                RefusedChange.GRANT_OVER_CEILING,
                limit=ceiling,
                asked=units,
                used=today,
                member_id=user_id,
            )
        await self._ledger.add_quota_adjustment(
            guild_id, user_id, self._quota.today(), AdjustmentKind.GRANT, units, actor
        )
        await self._records.log_moderation(guild_id, user_id, LogKind.GRANT, f"+{units}", actor)
        return await self._quota.member_status(user_id, guild_id, role_ids)

    async def reset(
        self, guild_id: int, user_id: int, role_ids: tuple[int, ...], actor: int
    ) -> QuotaStatus:
        """Forget what the member used today (refunds nothing: the images stay made)."""
        await self._ledger.add_quota_adjustment(
            guild_id, user_id, self._quota.today(), AdjustmentKind.RESET, 0, actor
        )
        await self._records.log_moderation(guild_id, user_id, LogKind.RESET, "usage reset", actor)
        return await self._quota.member_status(user_id, guild_id, role_ids)

    async def set_nsfw(
        self, guild_id: int, allow: bool | None, spoiler: bool | None, actor: int
    ) -> list[tuple[str, str]]:
        """Adult content in age-restricted channels (kie.ai's filter off there, if the operator
        permits it) and spoilers for results there; what changed: (setting, "on" or "off")."""
        changes = []
        for name, value in (("nsfw_allowed", allow), ("nsfw_spoiler", spoiler)):
            if value is None:
                continue
            await self._settings.set_nsfw(guild_id, name, value)
            shown = "on" if value else "off"
            await self._records.log_moderation(guild_id, actor, LogKind(name), shown, actor)
            changes.append((name, shown))
        return changes

    async def set_default_model(self, guild_id: int, model: Model | None, actor: int) -> str:
        """The model `/imagine` uses where the member names none (None: the bot's, flex);
        what is now in force, in words for the log."""
        await self._settings.set_default_model(guild_id, model)
        shown = model or f"{DEFAULT_MODEL} (default)"
        await self._records.log_moderation(guild_id, actor, LogKind.DEFAULT_MODEL, shown, actor)
        return shown

    def _check_member_units(self, units: int) -> None:
        ceiling = self._quota.ceiling
        if units > ceiling:
            raise PolicyError(RefusedChange.QUOTA_OVER_CEILING, limit=ceiling, asked=units)

    async def view(self, guild_id: int, run_limits: RunLimits, changes: int = 8) -> PolicyView:
        return PolicyView(
            policy=await self._settings.server_policy(guild_id),
            default_quota=self._quota.daily_limit,
            run_limits=run_limits,
            member_ceiling=self._quota.ceiling,
            server_cap=await self._quota.server_cap(guild_id),
            nsfw_permitted=self._nsfw_permitted,
            allowed_channels=await self._settings.allowed_channels(guild_id),
            audit_channel=await self._settings.audit_channel(guild_id),
            blocked_terms=len(await self._records.blocked_terms(guild_id)),
            recent_changes=await self._records.admin_changes(guild_id, changes),
        )
