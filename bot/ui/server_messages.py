"""Texts and embeds of the `/server` admin commands, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import discord

from bot.accounts import KeyRefusal, KeySaved
from bot.admin_events import AuditEvent, AuditKind
from bot.domain import (
    DEFAULT_MODEL,
    ChangeRefused,
    DayTotals,
    LogKind,
    MemberTotals,
    RefusedChange,
    SealedKey,
    ServerSpend,
)
from bot.i18n import N_, _, ngettext, short_date
from bot.kie.credits import Balance
from bot.policy import PolicyView
from bot.quota import BudgetStatus, QuotaStatus
from bot.ui.messages import COLOUR_WORKING, safe_prompt, timestamp, units

_CHANGE_NAMES: dict[LogKind, str] = {
    LogKind.DAILY_QUOTA: N_("daily quota"),
    LogKind.DAILY_BUDGET: N_("daily budget"),
    LogKind.MAX_RUNNING_PER_MEMBER: N_("running jobs per member"),
    LogKind.MAX_RUNNING: N_("running jobs in the server"),
    LogKind.ROLE_QUOTA: N_("role quota"),
    LogKind.GRANT: N_("grant"),
    LogKind.RESET: N_("quota reset"),
    LogKind.TERM_ADDED: N_("blocked term"),
    LogKind.TERM_REMOVED: N_("unblocked term"),
    LogKind.BANNED: N_("ban"),
    LogKind.UNBANNED: N_("unban"),
    LogKind.AUDIT_CHANNEL: N_("audit channel"),
    LogKind.CHANNEL_ALLOWED: N_("channel allowed"),
    LogKind.CHANNEL_DISALLOWED: N_("channel removed"),
    LogKind.NSFW_ALLOWED: N_("adult content in age-restricted channels"),
    LogKind.NSFW_SPOILER: N_("spoilers in age-restricted channels"),
    LogKind.DEFAULT_MODEL: N_("default model"),
}


def change_name(kind: LogKind) -> str:
    """How an admin change of this kind is named in the audit channel and /server settings
    (in the current language)."""
    return _(_CHANGE_NAMES[kind]) if kind in _CHANGE_NAMES else kind


_AUDIT_TITLES = {
    AuditKind.SETTING_CHANGED: N_("⚙️ Setting changed"),
    AuditKind.ROLE_QUOTA_CHANGED: N_("⚙️ Role quota changed"),
    AuditKind.UNITS_GRANTED: N_("🎁 Units granted"),
    AuditKind.QUOTA_RESET: N_("🔄 Quota reset"),
    AuditKind.TERM_BLOCKED: N_("🚫 Term blocked"),
    AuditKind.TERM_UNBLOCKED: N_("✅ Term unblocked"),
    AuditKind.MEMBER_BANNED: N_("⛔ Member banned"),
    AuditKind.MEMBER_UNBANNED: N_("✅ Member unbanned"),
    AuditKind.RESULT_DELETED: N_("🗑️ Result deleted"),
    AuditKind.AUDIT_CHANNEL_SET: N_("⚙️ Audit channel changed"),
    AuditKind.CHANNEL_ALLOWED: N_("⚙️ Channel allowed"),
    AuditKind.CHANNEL_DISALLOWED: N_("⚙️ Channel removed"),
    AuditKind.BANNED_REFUSED: N_("⛔ Banned member refused"),
    AuditKind.PROMPT_REFUSED: N_("🚫 Prompt refused"),
    AuditKind.GLOBAL_TERM_REFUSED: N_("🚫 Prompt refused (the bot's blocklist)"),
    AuditKind.USER_BANNED_REFUSED: N_("⛔ Member banned by the bot's operator refused"),
    AuditKind.SERVER_CAP_REACHED: N_("📉 The bot's daily cap for this server is reached"),
    AuditKind.KIE_KEY_SET: N_("🔑 kie.ai key set"),
    AuditKind.KIE_KEY_REMOVED: N_("🔑 kie.ai key removed"),
    AuditKind.KIE_KEY_FAILED: N_("⛔ This server's kie.ai key failed"),
    AuditKind.KIE_KEY_LOW: N_("💰 This server's kie.ai balance is low"),
}


def audit_title(kind: AuditKind) -> str:
    """The title of an audit-channel post."""
    return _(_AUDIT_TITLES[kind])


def audit_detail(event: AuditEvent) -> str:
    """The details line of an audit-channel post (as typed; the embed escapes it)."""
    if event.kind is AuditKind.SETTING_CHANGED and event.setting is not None:
        return f"{change_name(event.setting)}: {event.value}"
    if event.kind is AuditKind.UNITS_GRANTED:
        return _("+{count} today").format(count=event.value)
    if event.kind is AuditKind.QUOTA_RESET:
        return _("usage today cleared")
    if event.kind is AuditKind.KIE_KEY_SET:
        return _("a key ending in …{last_four}").format(last_four=event.value)
    if event.kind is AuditKind.KIE_KEY_LOW:
        return _("{credits} credits left on this server's kie.ai account.").format(
            credits=event.value
        )
    if event.kind is AuditKind.KIE_KEY_FAILED:
        return key_failure(event.value or "")
    return event.detail


def _limit(value: int | None) -> str:
    return _("no limit") if value is None else str(value)


def settings_embed(view: PolicyView) -> discord.Embed:
    policy = view.policy
    embed = discord.Embed(title=_("⚙️ Image bot settings for this server"), colour=COLOUR_WORKING)
    quota = (
        units(policy.daily_quota)
        if policy.daily_quota is not None
        else _("{units} (the bot's default)").format(units=units(view.default_quota))
    )
    embed.add_field(
        name=_("Daily quota per member"),
        value=_("{quota} · at most {ceiling} (the bot's)").format(
            quota=quota, ceiling=view.member_ceiling
        ),
    )
    roles = ", ".join(
        f"<@&{role}>: {units(n)}"
        for role, n in sorted(policy.role_quotas.items(), key=lambda item: -item[1])
    )
    embed.add_field(name=_("Role quotas (highest applies)"), value=roles or _("none"))
    budget = units(policy.daily_budget) if policy.daily_budget is not None else _("none")
    cap = units(view.server_cap) if view.server_cap is not None else _("none")
    embed.add_field(
        name=_("Server budget per day"),
        value=_("{budget} · the bot's cap: {cap}").format(budget=budget, cap=cap),
    )
    limits = view.run_limits
    embed.add_field(
        name=_("Running at once"),
        value=_("{per_member} per member · {per_server} in the server").format(
            per_member=_limit(limits.per_member), per_server=_limit(limits.per_server)
        ),
    )
    model = policy.default_model or _("{model} (the bot's default)").format(model=DEFAULT_MODEL)
    embed.add_field(
        name=_("Default model"),
        value=_("{model} · `/imagine model:` overrides it").format(model=model),
    )
    channels = ", ".join(f"<#{c}>" for c in view.allowed_channels) or _("every channel")
    embed.add_field(name=_("/imagine works in"), value=channels)
    audit = f"<#{view.audit_channel}>" if view.audit_channel else _("off")
    embed.add_field(name=_("Audit log"), value=audit)
    embed.add_field(name=_("Blocked terms"), value=str(view.blocked_terms))
    embed.add_field(name=_("Adult content"), value=_nsfw_state(view), inline=False)
    if view.recent_changes:
        lines = [
            f"{timestamp(entry.at)} <@{entry.actor_id}> · "
            f"{change_name(entry.kind)}"
            + (f" <@{entry.user_id}>" if entry.user_id != entry.actor_id else "")
            + (f": {safe_prompt(entry.detail, 80)}" if entry.detail else "")
            for entry in view.recent_changes
        ]
        embed.add_field(name=_("Latest changes"), value="\n".join(lines)[:1024], inline=False)
    return embed


def _nsfw_state(view: PolicyView) -> str:
    policy = view.policy
    if not policy.nsfw_allowed:
        state = _("off: kie.ai's safety filter is on in every channel")
    elif not view.nsfw_permitted:
        state = _("allowed here, but the bot's operator does not permit it: the filter stays on")
    else:
        state = _("on in age-restricted channels (kie.ai's safety filter off there)")
    if policy.nsfw_spoiler:
        return _("{state} · spoilers in age-restricted channels: on").format(state=state)
    return _("{state} · spoilers in age-restricted channels: off").format(state=state)


def member_quota_line(user_id: int, status: QuotaStatus) -> str:
    return _(
        "{member} has now used {used} of {units} today ({remaining} left, resets {when})."
    ).format(
        member=f"<@{user_id}>",
        used=status.used,
        units=units(status.limit),
        remaining=status.remaining,
        when=timestamp(status.resets_at),
    )


def credits_text(balance: Balance, operator_alerted: bool) -> str:
    text = _("The bot's kie.ai account has **{credits} credits** left.").format(
        credits=f"{balance.credits:,.0f}"
    )
    if balance.low:
        told = (
            _("The bot's operator has been alerted.")
            if operator_alerted
            else _("Please tell the bot's operator.")
        )
        below = _("⚠️ That is below the warning level of {threshold}.").format(
            threshold=f"{balance.threshold:,.0f}"
        )
        text += f"\n{below} {told}"
    return text


def server_spend_text(spend: ServerSpend, budget: BudgetStatus | None) -> str:
    text = _("This server spent **{today}** today and **{month}** this month (UTC).").format(
        today=units(spend.units_today), month=units(spend.units_month)
    )
    if budget is not None:
        text += " " + _("Today's allowance: {spent} of {budget} units.").format(
            spent=budget.spent, budget=budget.budget
        )
    text += "\n" + _("kie.ai credits this month: {credits}.").format(credits=credits_figure(spend))
    return text


def credits_figure(spend: ServerSpend) -> str:
    """The credits kie.ai reported, and how many images it did not report a cost for."""
    text = f"{spend.credits_month:,.0f}"
    if spend.unreported_month:
        text += " " + ngettext(
            "(+ {count} image whose cost kie.ai did not report)",
            "(+ {count} images whose cost kie.ai did not report)",
            spend.unreported_month,
        ).format(count=spend.unreported_month)
    return text


def stats_embed(
    days: list[DayTotals], top: list[MemberTotals], today: str, since: datetime
) -> discord.Embed:
    embed = discord.Embed(title=_("📊 Image generations in this server"), colour=COLOUR_WORKING)
    for title, chosen in (
        (_("Today"), [d for d in days if d.day == today]),
        (_("Last 7 days"), days),
    ):
        delivered = sum(d.delivered for d in chosen)
        failed = sum(d.failed for d in chosen)
        spent = sum(d.units for d in chosen)
        embed.add_field(
            name=title,
            value=_("{made} made · {failed} failed (refunded) · {units} spent").format(
                made=delivered, failed=failed, units=units(spent)
            ),
            inline=False,
        )
    leaders = "\n".join(
        _("{rank}. {member}: {made} made, {units}").format(
            rank=rank,
            member=f"<@{member.user_id}>",
            made=member.delivered,
            units=units(member.units),
        )
        for rank, member in enumerate(top, start=1)
    )
    embed.add_field(name=_("Top members (7 days)"), value=leaders or _("nobody yet"), inline=False)
    # A footer shows no Discord timestamp: the date is written in the reader's language.
    embed.set_footer(text=_("UTC days since {date}").format(date=short_date(since)))
    return embed


# --- /server kie-key -------------------------------------------------------------------------


def key_form_title() -> str:
    return _("This server's kie.ai key")


def key_form_label() -> str:
    return _("kie.ai API key (kept sealed, never shown)")


def key_saved(saved: KeySaved) -> str:
    return _(
        "🔑 Saved: this server's images now use its own kie.ai key (ending in …{last_four}), "
        "which has **{credits} credits**. Its account pays kie.ai; the server's quotas still "
        "apply."
    ).format(last_four=saved.last_four, credits=f"{saved.credits:,.0f}")


def key_refused(refusal: KeyRefusal) -> str:
    if refusal is KeyRefusal.NO_SECRET_KEY:
        text = _("The bot's operator has not enabled servers' own keys (SECRET_KEY is not set).")
    elif refusal is KeyRefusal.MALFORMED:
        text = _("That does not look like a kie.ai API key (https://kie.ai/api-key).")
    elif refusal is KeyRefusal.REFUSED:
        text = _("kie.ai refused that key. Check it at https://kie.ai/api-key and try again.")
    else:
        text = _("kie.ai could not check the key just now. Please try again in a minute.")
    return text + " " + _("Nothing was changed.")


def key_shown(key: SealedKey | None, required: bool) -> str:
    if key is None:
        if required:
            return _(
                "This server has no kie.ai key of its own, and the bot needs one to make "
                "images here: run `/server kie-key set`."
            )
        return _(
            "This server has no kie.ai key of its own: its images use the bot's. "
            "`/server kie-key set` makes them use yours."
        )
    return _(
        "This server's images use its own kie.ai key, ending in …{last_four}, set by "
        "<@{member}> {when}."
    ).format(
        last_four=key.last_four,
        member=key.set_by,
        when=timestamp(datetime.fromtimestamp(key.set_at, UTC)),
    )


def key_removed(removed: bool, required: bool) -> str:
    if not removed:
        return _("This server has no kie.ai key of its own. Nothing was changed.")
    if required:
        return _(
            "🔑 Removed. This server has no kie.ai key now, so no new images can be made here "
            "until someone runs `/server kie-key set`."
        )
    return _("🔑 Removed. This server's images use the bot's kie.ai key again.")


def key_failure(kind: str) -> str:
    """Why the server's own key failed a job (the `FailureKind` value)."""
    if kind == "out_of_credits":
        return _("Its kie.ai account is out of credits: top it up, or run `/server kie-key`.")
    if kind == "misconfigured":
        return _("kie.ai refused it: set a valid key with `/server kie-key set`.")
    return _("kie.ai refused a generation with it ({reason}).").format(reason=kind)


def credits_unavailable() -> str:
    return _("kie.ai did not tell the balance just now. Please try again in a minute.")


def stats_chart_title() -> str:
    # English in every language: the chart's built-in font draws ASCII only (see bot/charts.py),
    # and its weekday labels are English too.
    return "Last 7 days (UTC)"


# --- /moderation ------------------------------------------------------------------------------


def term_blocked(term: str, count: int, added: bool) -> str:
    shown = safe_prompt(term, 100)
    if added:
        return ngettext(
            "Blocked **{term}**. This server blocks {count} term.",
            "Blocked **{term}**. This server blocks {count} terms.",
            count,
        ).format(term=shown, count=count)
    return _("**{term}** was already blocked. Nothing changed.").format(term=shown)


def term_unblocked(term: str, removed: bool) -> str:
    shown = safe_prompt(term, 100)
    if removed:
        return _("**{term}** is allowed again.").format(term=shown)
    return _("**{term}** was not blocked. Nothing changed.").format(term=shown)


def blocked_terms(terms: list[str]) -> str:
    if not terms:
        return _("This server blocks no terms.")
    listed = ", ".join(f"`{safe_prompt(t, 100)}`" for t in terms)
    return _("Blocked terms ({count}): {terms}").format(count=len(terms), terms=listed)[:1900]


def member_banned(member_id: int, banned: bool) -> str:
    member = f"<@{member_id}>"
    if banned:
        return _("{member} can no longer use the bot here.").format(member=member)
    return _("{member} was already banned. Nothing changed.").format(member=member)


def member_unbanned(member_id: int, unbanned: bool) -> str:
    member = f"<@{member_id}>"
    if unbanned:
        return _("{member} can use the bot again.").format(member=member)
    return _("{member} was not banned. Nothing changed.").format(member=member)


def audit_channel_set(channel_id: int | None) -> str:
    if channel_id is None:
        return _("The audit log is off.")
    return _("Generations and moderation events now go to {channel}.").format(
        channel=f"<#{channel_id}>"
    )


def where_imagine_works(channels: list[int]) -> str:
    if not channels:
        return _("`/imagine` works in every channel again.")
    return _("`/imagine` now works only in {channels}.").format(
        channels=", ".join(f"<#{c}>" for c in channels)
    )


# --- changes the rules refuse (`ChangeRefused`, answered by the bot's one error handler) ---------


def change_refused(error: ChangeRefused) -> str:
    """Why an admin's change was not made (the operator's blocklist too: they are its admin)."""
    reason = _refused_reason(error)
    return f"{reason} {_('Nothing changed.')}" if error.reason in _CEILINGS else reason


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
        return _(
            "The bot's operator allows at most {limit} units per member per day, so a quota of "
            "{asked} can't be set."
        ).format(limit=limit, asked=error.asked)
    if reason is RefusedChange.BUDGET_OVER_CAP:
        return _(
            "The bot's operator caps this server at {limit} units a day; its budget can be "
            "lower, not higher."
        ).format(limit=limit)
    if reason is RefusedChange.GRANT_OVER_CEILING:
        room = max(0, limit - error.used)
        return _(
            "The bot's operator allows at most {limit} units per member per day, and {member} "
            "already has {used} today: at most {room} more can be granted."
        ).format(limit=limit, member=f"<@{error.member_id}>", used=error.used, room=room)
    if reason is RefusedChange.SERVER_TERMS_FULL:
        return _("A server can block at most {limit} terms.").format(limit=limit)
    if reason is RefusedChange.BOT_TERMS_FULL:
        return _("The bot's blocklist holds at most {limit} terms.").format(limit=limit)
    if reason is RefusedChange.BAN_SELF:
        return _("You can't ban yourself.")
    if reason is RefusedChange.TERM_TOO_LONG:
        return _("A blocked term can be at most {limit} characters long.").format(limit=limit)
    return _("A blocked term needs at least {limit} letters or digits.").format(limit=limit)


# --- /help for server managers ------------------------------------------------------------------

CHECKLIST_CHANNELS = 10


def setup_checklist(view: PolicyView) -> str:
    """`/help`'s checklist for members who can manage the server: each setting, whether it is
    set (and to what), and the command that sets it."""
    policy = view.policy

    def line(done: bool, name: str, state: str, command: str) -> str:
        return f"{'✅' if done else '⬜'} **{name}**: {state} · `{command}`"

    audit = f"<#{view.audit_channel}>" if view.audit_channel else _("not set")
    shown = view.allowed_channels[:CHECKLIST_CHANNELS]  # an embed field holds 1024 characters
    channels = ", ".join(f"<#{c}>" for c in shown) or _("not set (every channel)")
    if len(view.allowed_channels) > len(shown):
        channels += " " + _("and {count} more").format(
            count=len(view.allowed_channels) - len(shown)
        )
    if policy.daily_quota is not None:
        quota = _("{units} per member a day").format(units=units(policy.daily_quota))
    else:
        quota = _("not set (the bot's default, {units})").format(units=units(view.default_quota))
    if policy.role_quotas:
        count = len(policy.role_quotas)
        quota += "; " + ngettext("{count} role quota", "{count} role quotas", count).format(
            count=count
        )
    cap = (
        "; " + _("the bot's cap: {units}").format(units=units(view.server_cap))
        if view.server_cap is not None
        else ""
    )
    budget = (
        _("{units} a day").format(units=units(policy.daily_budget)) + cap
        if policy.daily_budget is not None
        else _("not set") + cap
    )
    if not view.nsfw_permitted:
        nsfw = _("not available: the bot's operator keeps kie.ai's safety filter on everywhere")
    elif policy.nsfw_allowed:
        nsfw = _("allowed in age-restricted channels")
    else:
        nsfw = _("not set (kie.ai's safety filter on everywhere)")
    quotas_set = policy.daily_quota is not None or bool(policy.role_quotas)
    return "\n".join(
        [
            line(
                view.audit_channel is not None,
                _("Audit channel"),
                audit,
                command("moderation", "audit-channel"),
            ),
            line(
                bool(view.allowed_channels),
                _("Allowed channels"),
                channels,
                command("moderation", "allow-channel"),
            ),
            line(
                quotas_set,
                _("Quotas"),
                quota,
                f"{command('server', 'quota')} · {command('server', 'role-quota')}",
            ),
            line(policy.daily_budget is not None, _("Budget"), budget, command("server", "budget")),
            line(
                policy.nsfw_allowed and view.nsfw_permitted,
                _("NSFW"),
                nsfw,
                command("server", "nsfw"),
            ),
        ]
    )


def command(*names: str) -> str:
    """A slash command as members of the current language see it in Discord: its names are
    the catalogue's command names (`CatalogueTranslator` gives Discord the same ones)."""
    return "/" + " ".join(_(name) for name in names)


def setup_checklist_title() -> str:
    return _("Setting up (you can manage this server)")
