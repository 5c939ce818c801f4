"""/server: a server's own image-bot policy: quotas, role quotas, grants and resets, the daily
budget, running limits, the default model, the kie.ai balance and usage statistics.

Only in a server, and by default only for members who can manage it (Discord hides the commands
from others; the bot checks again, since admins can change who sees them). Every answer is
private and shows the change back; every change is stored and posted to the audit channel by
`AdminEvents`, and a change the rules refuse is answered by the bot's one error handler.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.accounts import KeySaved
from bot.alerts import AlertKind
from bot.charts import DayStats, render_daily_chart
from bot.domain import DayTotals, ServerSpend, parse_model
from bot.kie import KieError
from bot.operator import guild_key
from bot.policy import MAX_RUNNING, MAX_UNITS, Setting
from bot.ui import server_messages as texts
from bot.ui.key_form import KeyForm
from bot.ui.messages import low_credits_alert, option_not_offered
from bot.ui.reply import NO_PINGS
from cogs.common import (
    MODEL_CHOICES,
    followup,
    guild_and_actor,
    is_server_manager,
    member_role_ids,
    private,
)

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

Units = app_commands.Range[int, 0, MAX_UNITS]
Running = app_commands.Range[int, 0, MAX_RUNNING]
STATS_DAYS = 7
TOP_MEMBERS = 5


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class ServerCog(
    commands.GroupCog,
    group_name=locale_str("server"),
    group_description=locale_str(
        "This server's image quotas, budget, limits, credits and statistics."
    ),
):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[ImagineBot]) -> bool:  # type: ignore[override]
        return await is_server_manager(interaction)

    kie_key = app_commands.Group(
        name=locale_str("kie-key"),
        description=locale_str("This server's own kie.ai key: its account pays for its images."),
    )

    @kie_key.command(
        name=locale_str("set"),
        description=locale_str("Set this server's own kie.ai key, typed in a private form."),
    )
    async def kie_key_set(self, interaction: discord.Interaction[ImagineBot]) -> None:
        # A modal, not an option: the key never appears in any message or command record.
        await interaction.response.send_modal(KeyForm(self._save_key))

    async def _save_key(self, interaction: discord.Interaction[ImagineBot], key: str) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        saved = await self.bot.admin_events.set_kie_key(guild_id, key, actor)
        if isinstance(saved, KeySaved):
            await followup(interaction, texts.key_saved(saved))
        else:
            await followup(interaction, texts.key_refused(saved))

    @kie_key.command(
        name=locale_str("show"),
        description=locale_str("Show the last four characters of this server's kie.ai key."),
    )
    async def kie_key_show(self, interaction: discord.Interaction[ImagineBot]) -> None:
        guild_id, _ = guild_and_actor(interaction)
        shown = await self.bot.jobs_accounts().shown(guild_id)
        required = self.bot.jobs_accounts().key_required(guild_id)
        await private(interaction, texts.key_shown(shown, required))

    @kie_key.command(
        name=locale_str("remove"),
        description=locale_str("Remove this server's kie.ai key: back to the bot's own."),
    )
    async def kie_key_remove(self, interaction: discord.Interaction[ImagineBot]) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        removed = await self.bot.admin_events.remove_kie_key(guild_id, actor)
        required = self.bot.jobs_accounts().refuses(guild_id)
        await followup(interaction, texts.key_removed(removed, required))

    @app_commands.command(
        name=locale_str("settings"),
        description=locale_str("Show this server's image-bot settings."),
    )
    async def settings(self, interaction: discord.Interaction[ImagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self._show_settings(interaction)

    @app_commands.command(
        name=locale_str("quota"), description=locale_str("Set the daily quota of every member.")
    )
    @app_commands.rename(units=locale_str("units"))
    @app_commands.describe(
        units=locale_str("Units per member per day; leave empty for the bot's default.")
    )
    async def quota(
        self, interaction: discord.Interaction[ImagineBot], units: Units | None = None
    ) -> None:
        await self._set(interaction, Setting.DAILY_QUOTA, units)

    @app_commands.command(
        name=locale_str("role-quota"),
        description=locale_str("Give members of a role their own quota."),
    )
    @app_commands.rename(role=locale_str("role"), units=locale_str("units"))
    @app_commands.describe(
        role=locale_str("The role."),
        units=locale_str("Units per day; leave empty to remove the role's quota."),
    )
    async def role_quota(
        self,
        interaction: discord.Interaction[ImagineBot],
        role: discord.Role,
        units: Units | None = None,
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.admin_events.set_role_quota(guild_id, role.id, role.name, units, actor)
        await self._show_settings(interaction)

    @app_commands.command(
        name=locale_str("grant"), description=locale_str("Give a member extra units for today.")
    )
    @app_commands.rename(member=locale_str("member"), units=locale_str("units"))
    @app_commands.describe(
        member=locale_str("Who gets them."), units=locale_str("How many extra units, today only.")
    )
    async def grant(
        self,
        interaction: discord.Interaction[ImagineBot],
        member: discord.User,
        units: app_commands.Range[int, 1, MAX_UNITS],
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        roles = member_role_ids(member, guild_id)
        status = await self.bot.admin_events.grant(guild_id, member.id, roles, units, actor)
        await followup(interaction, texts.member_quota_line(member.id, status))

    @app_commands.command(
        name=locale_str("reset"), description=locale_str("Clear what a member used today.")
    )
    @app_commands.rename(member=locale_str("member"))
    @app_commands.describe(member=locale_str("Whose usage to clear (their images stay)."))
    async def reset(
        self, interaction: discord.Interaction[ImagineBot], member: discord.User
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        roles = member_role_ids(member, guild_id)
        status = await self.bot.admin_events.reset(guild_id, member.id, roles, actor)
        await followup(interaction, texts.member_quota_line(member.id, status))

    @app_commands.command(
        name=locale_str("budget"),
        description=locale_str("Cap the units the whole server spends a day."),
    )
    @app_commands.rename(units=locale_str("units"))
    @app_commands.describe(
        units=locale_str("Units per day for everyone together; leave empty for no cap.")
    )
    async def budget(
        self, interaction: discord.Interaction[ImagineBot], units: Units | None = None
    ) -> None:
        await self._set(interaction, Setting.DAILY_BUDGET, units)

    @app_commands.command(
        name=locale_str("limits"),
        description=locale_str("How many images may be generating at once."),
    )
    @app_commands.rename(per_member=locale_str("per_member"), server=locale_str("server"))
    @app_commands.describe(
        per_member=locale_str("Jobs at once per member (0: the bot's default; empty: unchanged)."),
        server=locale_str(
            "Jobs at once in the whole server (0: the bot's default; empty: unchanged)."
        ),
    )
    async def limits(
        self,
        interaction: discord.Interaction[ImagineBot],
        per_member: Running | None = None,
        server: Running | None = None,
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.admin_events.set_running_limits(guild_id, per_member, server, actor)
        await self._show_settings(interaction)

    @app_commands.command(
        name=locale_str("nsfw"), description=locale_str("Adult content in age-restricted channels.")
    )
    @app_commands.rename(allow=locale_str("allow"), spoiler=locale_str("spoiler"))
    @app_commands.describe(
        allow=locale_str(
            "Turn kie.ai's safety filter off in age-restricted channels (if the bot's operator "
            "permits it)."
        ),
        spoiler=locale_str("Post results in age-restricted channels as spoilers."),
    )
    async def nsfw(
        self,
        interaction: discord.Interaction[ImagineBot],
        allow: bool | None = None,
        spoiler: bool | None = None,
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.admin_events.set_nsfw(guild_id, allow, spoiler, actor)
        await self._show_settings(interaction)

    @app_commands.command(
        name=locale_str("model"),
        description=locale_str("Choose the model /imagine uses by default."),
    )
    @app_commands.rename(model=locale_str("model"))
    @app_commands.describe(
        model=locale_str(
            "flex or pro; members may still pick with /imagine model:. Empty: the bot's (flex)."
        )
    )
    @app_commands.choices(model=MODEL_CHOICES)
    async def model(
        self, interaction: discord.Interaction[ImagineBot], model: str | None = None
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        try:
            chosen = None if model is None else parse_model(model)
        except ValueError:  # Discord offers only the choices; a forged interaction may not
            await private(interaction, option_not_offered())
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.admin_events.set_default_model(guild_id, chosen, actor)
        await self._show_settings(interaction)

    @app_commands.command(
        name=locale_str("credits"),
        description=locale_str("What this server spent (units, credits)."),
    )
    async def credits(self, interaction: discord.Interaction[ImagineBot]) -> None:
        guild_id, _ = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        book = self.bot.quota
        found = await self.bot.storage.jobs.spend_by_server(
            book.today(), book.month_start(), guild_id
        )
        spend = found[0] if found else ServerSpend(guild_key(guild_id), 0, 0, 0.0, 0)
        text = texts.server_spend_text(spend, await book.budget_status(guild_id))
        if not self.bot.settings.show_credits_to_servers:
            # The account is the operator's: its balance is theirs to share, or not.
            await followup(interaction, text)
            return
        try:
            balance = await self.bot.credits.balance()
        except KieError:
            await followup(interaction, f"{text}\n{texts.credits_unavailable()}")
            return
        alerted = False
        if balance.low:
            alert = low_credits_alert(balance)
            alerted = await self.bot.alerts.alert(AlertKind.LOW_BALANCE, alert)
        await followup(interaction, f"{text}\n{texts.credits_text(balance, alerted)}")

    @app_commands.command(
        name=locale_str("stats"), description=locale_str("Generations, failures and units spent.")
    )
    async def stats(self, interaction: discord.Interaction[ImagineBot]) -> None:
        guild_id, _ = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        book = self.bot.quota
        since = book.days_ago(STATS_DAYS - 1)
        totals = await self.bot.storage.jobs.daily_totals(guild_id, since)
        top = await self.bot.storage.jobs.top_members(guild_id, since, TOP_MEMBERS)
        first_day = date.fromisoformat(since)
        since_midnight = datetime.combine(first_day, datetime.min.time(), UTC)
        embed = texts.stats_embed(totals, top, book.today(), since_midnight)
        days = _every_day(totals, first_day, STATS_DAYS)
        png = await asyncio.to_thread(render_daily_chart, days, title=texts.stats_chart_title())
        embed.set_image(url="attachment://stats.png")
        await interaction.followup.send(
            embed=embed,
            file=discord.File(io.BytesIO(png), filename="stats.png"),
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )

    async def _set(
        self, interaction: discord.Interaction[ImagineBot], setting: Setting, value: int | None
    ) -> None:
        guild_id, actor = guild_and_actor(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.admin_events.set_value(guild_id, setting, value, actor)
        await self._show_settings(interaction)

    async def _show_settings(self, interaction: discord.Interaction[ImagineBot]) -> None:
        guild_id, _ = guild_and_actor(interaction)
        limits = await self.bot.jobs.run_limits(guild_id)
        view = await self.bot.admin.view(guild_id, limits)
        await interaction.followup.send(
            embed=texts.settings_embed(view), ephemeral=True, allowed_mentions=NO_PINGS
        )


def _every_day(totals: list[DayTotals], first_day: date, count: int) -> list[DayStats]:
    """One entry per day for the chart, zero for days without generations."""
    by_day = {t.day: t for t in totals}
    days = []
    for offset in range(count):
        day = first_day + timedelta(days=offset)
        found = by_day.get(day.isoformat(), DayTotals(day.isoformat(), 0, 0, 0))
        days.append(DayStats(day, found.delivered, found.failed, found.units))
    return days


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ServerCog(bot))
