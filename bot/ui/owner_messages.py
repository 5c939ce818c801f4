"""Texts and embeds of the operator's `/owner` commands, as pure functions."""

from __future__ import annotations

from collections.abc import Callable

import discord

from bot.domain import OwnerAction, ServerSpend
from bot.operator import DM_KEY
from bot.ui.messages import COLOUR_WORKING, safe_prompt, timestamp, units
from bot.ui.server_messages import credits_figure

MAX_ROWS = 20  # an embed holds 25 fields; the rest are counted in the footer


def server_name(key: int, name_of: Callable[[int], str | None]) -> str:
    if key == DM_KEY:
        return "Direct messages"
    name = name_of(key)
    return f"{safe_prompt(name, 60)} ({key})" if name else f"Server {key}"


def servers_embed(
    spends: list[ServerSpend],
    refusals: dict[int, dict[str, int]],
    caps: dict[int, int | None],
    banned: set[int],
    name_of: Callable[[int], str | None],
    total_today: int,
    total_cap: int | None,
    paused: str | None,
) -> discord.Embed:
    embed = discord.Embed(title="🛰️ Every server, by spend this month", colour=COLOUR_WORKING)
    cap_text = f" of {units(total_cap)} (TOTAL_DAILY_CAP)" if total_cap else ""
    embed.description = f"Today over everything: **{units(total_today)}**{cap_text}."
    if paused is not None:
        embed.description += f"\n⏸️ Generation is paused: {safe_prompt(paused, 200)}"
    by_key = {spend.guild_key: spend for spend in spends}
    keys = [spend.guild_key for spend in spends]
    keys += sorted(key for key in refusals if key not in by_key)
    for key in keys[:MAX_ROWS]:
        spend = by_key.get(key, ServerSpend(key, 0, 0, 0.0, 0))
        cap = caps.get(key)
        lines = [
            f"today {spend.units_today} of {cap if cap is not None else 'no cap'} · "
            f"month {units(spend.units_month)} · {credits_figure(spend)} credits"
        ]
        refused = refusals.get(key)
        if refused:
            counted = ", ".join(f"{reason} ×{n}" for reason, n in sorted(refused.items()))
            lines.append(f"refused today: {counted}")
        if key in banned:
            lines.append("⛔ banned by the operator")
        embed.add_field(name=server_name(key, name_of), value="\n".join(lines)[:1024], inline=False)
    if not keys:
        embed.add_field(name="Nothing yet", value="No server spent or was refused anything.")
    if len(keys) > MAX_ROWS:
        embed.set_footer(text=f"and {len(keys) - MAX_ROWS} more servers with smaller spends")
    return embed


def actions_embed(actions: list[OwnerAction]) -> discord.Embed:
    embed = discord.Embed(title="🗒️ The operator's latest actions", colour=COLOUR_WORKING)
    lines = [
        f"{timestamp(action.at)} <@{action.actor_id}> · {action.action}"
        + (f" {safe_prompt(action.target, 60)}" if action.target else "")
        + (f": {safe_prompt(action.detail, 120)}" if action.detail else "")
        for action in actions
    ]
    embed.description = "\n".join(lines)[:4000] or "Nothing yet."
    return embed


def not_an_operator() -> str:
    return "Only the bot's owner (or a member of its team) can use `/owner`."


def bad_server(text: str) -> str:
    return (
        f"“{safe_prompt(text, 40)}” is not a server ID: give its digits (Developer Mode → Copy "
        "Server ID), or `dms` for direct messages."
    )


def cap_set(name: str, units_: int | None, default: int | None) -> str:
    if units_ is None:
        shown = units(default) if default else "no cap"
        return f"{name} is back to the default cap (SERVER_DAILY_CAP: {shown})."
    if units_ == 0:
        return f"{name} now has no daily cap."
    return f"{name} may now spend {units(units_)} a day."


def paused_text(changed: bool, reason: str) -> str:
    first = "Generation is paused." if changed else "Generation was already paused."
    return (
        f"{first} Members are told: “{safe_prompt(reason, 200)}”. Waiting jobs keep their units "
        "and start on `/owner resume`; images kie.ai already has are still delivered."
    )


def user_banned(user_id: int, banned: bool) -> str:
    if banned:
        return f"<@{user_id}> can no longer generate anywhere."
    return f"<@{user_id}> was already banned. Nothing changed."


def user_unbanned(user_id: int, unbanned: bool) -> str:
    if unbanned:
        return f"<@{user_id}> can generate again."
    return f"<@{user_id}> was not banned. Nothing changed."


def server_banned(name: str, banned: bool) -> str:
    if banned:
        return f"{name} can no longer use the bot."
    return f"{name} was already banned. Nothing changed."


def server_unbanned(name: str, unbanned: bool) -> str:
    if unbanned:
        return f"{name} can use the bot again."
    return f"{name} was not banned. Nothing changed."


def term_blocked(term: str, added: bool) -> str:
    shown = safe_prompt(term, 100)
    if added:
        return f"Blocked **{shown}** everywhere."
    return f"**{shown}** was already blocked. Nothing changed."


def term_unblocked(term: str, removed: bool) -> str:
    shown = safe_prompt(term, 100)
    if removed:
        return f"**{shown}** is allowed again (unless a server blocks it)."
    return f"**{shown}** was not blocked. Nothing changed."


def resumed_text(resumed: bool) -> str:
    if resumed:
        return "Generation resumed; waiting jobs are starting."
    return "Generation was not paused. Nothing changed."
