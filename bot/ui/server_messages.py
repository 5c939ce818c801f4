"""Texts and embeds of the `/server` admin commands, as pure functions."""

from __future__ import annotations

from datetime import datetime

import discord

from bot.admin_events import AuditEvent, AuditKind
from bot.domain import (
    DEFAULT_MODEL,
    ChangeRefused,
    DayTotals,
    LogKind,
    MemberTotals,
    RefusedChange,
    ServerSpend,
)
from bot.kie.credits import Balance
from bot.policy import PolicyView
from bot.quota import BudgetStatus, QuotaStatus
from bot.ui.messages import COLOUR_WORKING, safe_prompt, timestamp, units

_CHANGE_NAMES: dict[LogKind, str] = {
    LogKind.DAILY_QUOTA: "daily quota",
    LogKind.DAILY_BUDGET: "daily budget",
    LogKind.MAX_RUNNING_PER_MEMBER: "running jobs per member",
    LogKind.MAX_RUNNING: "running jobs in the server",
    LogKind.ROLE_QUOTA: "role quota",
    LogKind.GRANT: "grant",
    LogKind.RESET: "quota reset",
    LogKind.TERM_ADDED: "blocked term",
    LogKind.TERM_REMOVED: "unblocked term",
    LogKind.BANNED: "ban",
    LogKind.UNBANNED: "unban",
    LogKind.AUDIT_CHANNEL: "audit channel",
    LogKind.CHANNEL_ALLOWED: "channel allowed",
    LogKind.CHANNEL_DISALLOWED: "channel removed",
    LogKind.NSFW_ALLOWED: "adult content in age-restricted channels",
    LogKind.NSFW_SPOILER: "spoilers in age-restricted channels",
    LogKind.DEFAULT_MODEL: "default model",
}


def change_name(kind: LogKind) -> str:
    """How an admin change of this kind is named in the log and the audit channel."""
    return _CHANGE_NAMES.get(kind, kind)


_AUDIT_TITLES = {
    AuditKind.SETTING_CHANGED: "⚙️ Setting changed",
    AuditKind.ROLE_QUOTA_CHANGED: "⚙️ Role quota changed",
    AuditKind.UNITS_GRANTED: "🎁 Units granted",
    AuditKind.QUOTA_RESET: "🔄 Quota reset",
    AuditKind.TERM_BLOCKED: "🚫 Term blocked",
    AuditKind.TERM_UNBLOCKED: "✅ Term unblocked",
    AuditKind.MEMBER_BANNED: "⛔ Member banned",
    AuditKind.MEMBER_UNBANNED: "✅ Member unbanned",
    AuditKind.RESULT_DELETED: "🗑️ Result deleted",
    AuditKind.AUDIT_CHANNEL_SET: "⚙️ Audit channel changed",
    AuditKind.CHANNEL_ALLOWED: "⚙️ Channel allowed",
    AuditKind.CHANNEL_DISALLOWED: "⚙️ Channel removed",
    AuditKind.BANNED_REFUSED: "⛔ Banned member refused",
    AuditKind.PROMPT_REFUSED: "🚫 Prompt refused",
    AuditKind.GLOBAL_TERM_REFUSED: "🚫 Prompt refused (the bot's blocklist)",
    AuditKind.USER_BANNED_REFUSED: "⛔ Member banned by the bot's operator refused",
    AuditKind.SERVER_CAP_REACHED: "📉 The bot's daily cap for this server is reached",
}


def audit_title(kind: AuditKind) -> str:
    """The title of an audit-channel post."""
    return _AUDIT_TITLES[kind]


def audit_detail(event: AuditEvent) -> str:
    """The details line of an audit-channel post (as typed; the embed escapes it)."""
    if event.kind is AuditKind.SETTING_CHANGED and event.setting is not None:
        return f"{change_name(event.setting)}: {event.value}"
    if event.kind is AuditKind.UNITS_GRANTED:
        return f"+{event.value} today"
    if event.kind is AuditKind.QUOTA_RESET:
        return "usage today cleared"
    return event.detail


def _limit(value: int | None) -> str:
    return "no limit" if value is None else str(value)


def settings_embed(view: PolicyView) -> discord.Embed:
    policy = view.policy
    embed = discord.Embed(title="⚙️ Image bot settings for this server", colour=COLOUR_WORKING)
    quota = (
        units(policy.daily_quota)
        if policy.daily_quota is not None
        else f"{units(view.default_quota)} (the bot's default)"
    )
    embed.add_field(
        name="Daily quota per member", value=f"{quota} · at most {view.member_ceiling} (the bot's)"
    )
    roles = ", ".join(
        f"<@&{role}>: {units(n)}"
        for role, n in sorted(policy.role_quotas.items(), key=lambda item: -item[1])
    )
    embed.add_field(name="Role quotas (highest applies)", value=roles or "none")
    budget = units(policy.daily_budget) if policy.daily_budget is not None else "none"
    cap = units(view.server_cap) if view.server_cap is not None else "none"
    embed.add_field(name="Server budget per day", value=f"{budget} · the bot's cap: {cap}")
    limits = view.run_limits
    embed.add_field(
        name="Running at once",
        value=f"{_limit(limits.per_member)} per member · {_limit(limits.per_server)} in the server",
    )
    model = policy.default_model or f"{DEFAULT_MODEL} (the bot's default)"
    embed.add_field(name="Default model", value=f"{model} · `/imagine model:` overrides it")
    channels = ", ".join(f"<#{c}>" for c in view.allowed_channels) or "every channel"
    embed.add_field(name="/imagine works in", value=channels)
    audit = f"<#{view.audit_channel}>" if view.audit_channel else "off"
    embed.add_field(name="Audit log", value=audit)
    embed.add_field(name="Blocked terms", value=str(view.blocked_terms))
    embed.add_field(name="Adult content", value=_nsfw_state(view), inline=False)
    if view.recent_changes:
        lines = [
            f"{timestamp(entry.at)} <@{entry.actor_id}> · "
            f"{change_name(entry.kind)}"
            + (f" <@{entry.user_id}>" if entry.user_id != entry.actor_id else "")
            + (f": {safe_prompt(entry.detail, 80)}" if entry.detail else "")
            for entry in view.recent_changes
        ]
        embed.add_field(name="Latest changes", value="\n".join(lines)[:1024], inline=False)
    return embed


def _nsfw_state(view: PolicyView) -> str:
    policy = view.policy
    if not policy.nsfw_allowed:
        state = "off: kie.ai's safety filter is on in every channel"
    elif not view.nsfw_permitted:
        state = "allowed here, but the bot's operator does not permit it: the filter stays on"
    else:
        state = "on in age-restricted channels (kie.ai's safety filter off there)"
    spoilers = "on" if policy.nsfw_spoiler else "off"
    return f"{state} · spoilers in age-restricted channels: {spoilers}"


def member_quota_line(user_id: int, status: QuotaStatus) -> str:
    return (
        f"<@{user_id}> has now used {status.used} of {units(status.limit)} today "
        f"({status.remaining} left, resets {timestamp(status.resets_at)})."
    )


def credits_text(balance: Balance, operator_alerted: bool) -> str:
    text = f"The bot's kie.ai account has **{balance.credits:,.0f} credits** left."
    if balance.low:
        told = (
            "The bot's operator has been alerted."
            if operator_alerted
            else "Please tell the bot's operator."
        )
        text += f"\n⚠️ That is below the warning level of {balance.threshold:,.0f}. {told}"
    return text


def server_spend_text(spend: ServerSpend, budget: BudgetStatus | None) -> str:
    text = (
        f"This server spent **{units(spend.units_today)}** today and "
        f"**{units(spend.units_month)}** this month (UTC)."
    )
    if budget is not None:
        text += f" Today's allowance: {budget.spent} of {budget.budget} units."
    text += f"\nkie.ai credits this month: {credits_figure(spend)}."
    return text


def credits_figure(spend: ServerSpend) -> str:
    """The credits kie.ai reported, and how many images it did not report a cost for."""
    text = f"{spend.credits_month:,.0f}"
    if spend.unreported_month:
        text += f" (+ {spend.unreported_month} images whose cost kie.ai did not report)"
    return text


def stats_embed(
    days: list[DayTotals], top: list[MemberTotals], today: str, since: datetime
) -> discord.Embed:
    embed = discord.Embed(title="📊 Image generations in this server", colour=COLOUR_WORKING)
    for title, chosen in (
        ("Today", [d for d in days if d.day == today]),
        ("Last 7 days", days),
    ):
        delivered = sum(d.delivered for d in chosen)
        failed = sum(d.failed for d in chosen)
        spent = sum(d.units for d in chosen)
        embed.add_field(
            name=title,
            value=f"{delivered} made · {failed} failed (refunded) · {units(spent)} spent",
            inline=False,
        )
    leaders = "\n".join(
        f"{rank}. <@{member.user_id}>: {member.delivered} made, {units(member.units)}"
        for rank, member in enumerate(top, start=1)
    )
    embed.add_field(name="Top members (7 days)", value=leaders or "nobody yet", inline=False)
    embed.set_footer(text=f"UTC days since {since:%a %d %b}")
    return embed


def credits_unavailable() -> str:
    return "kie.ai did not tell the balance just now. Please try again in a minute."


def stats_chart_title() -> str:
    return "Last 7 days (UTC)"


# --- /moderation ------------------------------------------------------------------------------


def term_blocked(term: str, count: int, added: bool) -> str:
    shown = safe_prompt(term, 100)
    if added:
        return f"Blocked **{shown}**. This server blocks {count} terms."
    return f"**{shown}** was already blocked. Nothing changed."


def term_unblocked(term: str, removed: bool) -> str:
    shown = safe_prompt(term, 100)
    if removed:
        return f"**{shown}** is allowed again."
    return f"**{shown}** was not blocked. Nothing changed."


def blocked_terms(terms: list[str]) -> str:
    if not terms:
        return "This server blocks no terms."
    listed = ", ".join(f"`{safe_prompt(t, 100)}`" for t in terms)
    return f"Blocked terms ({len(terms)}): {listed}"[:1900]


def member_banned(member_id: int, banned: bool) -> str:
    if banned:
        return f"<@{member_id}> can no longer use the bot here."
    return f"<@{member_id}> was already banned. Nothing changed."


def member_unbanned(member_id: int, unbanned: bool) -> str:
    if unbanned:
        return f"<@{member_id}> can use the bot again."
    return f"<@{member_id}> was not banned. Nothing changed."


def audit_channel_set(channel_id: int | None) -> str:
    if channel_id is None:
        return "The audit log is off."
    return f"Generations and moderation events now go to <#{channel_id}>."


def where_imagine_works(channels: list[int]) -> str:
    if not channels:
        return "`/imagine` works in every channel again."
    return f"`/imagine` now works only in {', '.join(f'<#{c}>' for c in channels)}."


# --- changes the rules refuse (`ChangeRefused`, answered by the bot's one error handler) ---------


def change_refused(error: ChangeRefused) -> str:
    """Why an admin's change was not made (the operator's blocklist too: they are its admin)."""
    reason = _refused_reason(error)
    return f"{reason} Nothing changed." if error.reason in _CEILINGS else reason


_CEILINGS = frozenset(
    {
        RefusedChange.QUOTA_OVER_CEILING,
        RefusedChange.BUDGET_OVER_CAP,
        RefusedChange.GRANT_OVER_CEILING,
    }
)


def _refused_reason(error: ChangeRefused) -> str:
    reason, limit = error.reason, error.limit
    if reason is RefusedChange.QUOTA_OVER_CEILING:
        return (
            f"The bot's operator allows at most {limit} units per member per day, so a "
            f"quota of {error.asked} can't be set."
        )
    if reason is RefusedChange.BUDGET_OVER_CAP:
        return (
            f"The bot's operator caps this server at {limit} units a day; its budget can "
            "be lower, not higher."
        )
    if reason is RefusedChange.GRANT_OVER_CEILING:
        room = max(0, limit - error.used)
        return (
            f"The bot's operator allows at most {limit} units per member per day, and "
            f"<@{error.member_id}> already has {error.used} today: at most {room} more can be "
            "granted."
        )
    if reason is RefusedChange.SERVER_TERMS_FULL:
        return f"A server can block at most {limit} terms."
    if reason is RefusedChange.BOT_TERMS_FULL:
        return f"The bot's blocklist holds at most {limit} terms."
    if reason is RefusedChange.BAN_SELF:
        return "You can't ban yourself."
    if reason is RefusedChange.TERM_TOO_LONG:
        return f"A blocked term can be at most {limit} characters long."
    return f"A blocked term needs at least {limit} letters or digits."


# --- /help for server managers ------------------------------------------------------------------

CHECKLIST_CHANNELS = 10


def setup_checklist(view: PolicyView) -> str:
    """`/help`'s checklist for members who can manage the server: each setting, whether it is
    set (and to what), and the command that sets it."""
    policy = view.policy

    def line(done: bool, name: str, state: str, command: str) -> str:
        return f"{'✅' if done else '⬜'} **{name}**: {state} · `{command}`"

    audit = f"<#{view.audit_channel}>" if view.audit_channel else "not set"
    shown = view.allowed_channels[:CHECKLIST_CHANNELS]  # an embed field holds 1024 characters
    channels = ", ".join(f"<#{c}>" for c in shown) or "not set (every channel)"
    if len(view.allowed_channels) > len(shown):
        channels += f" and {len(view.allowed_channels) - len(shown)} more"
    if policy.daily_quota is not None:
        quota = f"{units(policy.daily_quota)} per member a day"
    else:
        quota = f"not set (the bot's default, {units(view.default_quota)})"
    if policy.role_quotas:
        quota += f"; {len(policy.role_quotas)} role quota(s)"
    cap = f"; the bot's cap: {units(view.server_cap)}" if view.server_cap is not None else ""
    budget = (
        f"{units(policy.daily_budget)} a day{cap}"
        if policy.daily_budget is not None
        else f"not set{cap}"
    )
    if not view.nsfw_permitted:
        nsfw = "not available: the bot's operator keeps kie.ai's safety filter on everywhere"
    elif policy.nsfw_allowed:
        nsfw = "allowed in age-restricted channels"
    else:
        nsfw = "not set (kie.ai's safety filter on everywhere)"
    quotas_set = policy.daily_quota is not None or bool(policy.role_quotas)
    return "\n".join(
        [
            line(
                view.audit_channel is not None, "Audit channel", audit, "/moderation audit-channel"
            ),
            line(
                bool(view.allowed_channels),
                "Allowed channels",
                channels,
                "/moderation allow-channel",
            ),
            line(quotas_set, "Quotas", quota, "/server quota · /server role-quota"),
            line(policy.daily_budget is not None, "Budget", budget, "/server budget"),
            line(policy.nsfw_allowed and view.nsfw_permitted, "NSFW", nsfw, "/server nsfw"),
        ]
    )


def setup_checklist_title() -> str:
    return "Setting up (you can manage this server)"
