"""/owner: the operator's controls over every server (see `bot/operator.py`).

Registered only in `OWNER_GUILD_ID`, and usable only by the application's owner or a member of
its team: the bot checks that itself, since Discord permissions in that one server say nothing
about who runs the bot. Every answer is private; every change is kept in the owner log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.operator import DM_KEY
from bot.ui import owner_messages as texts
from cogs.common import followup, private

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

MAX_CAP = 1_000_000
ServerId = app_commands.Range[str, 1, 25]


def parse_server(text: str) -> int | None:
    """A server ID typed by the owner, or `dms`; None when it is neither."""
    text = text.strip().lower()
    if text in ("dm", "dms"):
        return DM_KEY
    return int(text) if text.isdigit() and 0 < int(text) < 2**64 else None


@app_commands.guild_only()
@app_commands.default_permissions(administrator=True)
class OwnerCog(
    commands.GroupCog,
    group_name="owner",
    group_description="The bot operator's controls over every server.",
):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[ImagineBot]) -> bool:  # type: ignore[override]
        if await self.bot.is_operator(interaction.user):
            return True
        await private(interaction, texts.not_an_operator())
        return False

    @app_commands.command(name="servers", description="Every server's spend, cap and refusals.")
    async def servers(self, interaction: discord.Interaction[ImagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        storage, book = self.bot.storage, self.bot.quota
        today = book.today()
        spends = await storage.jobs.spend_by_server(today, book.month_start())
        refusals = await storage.moderation.refusals_on(today)
        keys = {spend.guild_key for spend in spends} | set(refusals)
        operator = self.bot.operator
        caps = {key: await operator.server_cap(key or None) for key in keys}
        banned = {key for key in keys if key and await operator.server_banned(key)}
        embed = texts.servers_embed(
            spends,
            refusals,
            caps,
            banned,
            self._server_name,
            await storage.jobs.total_units(today),
            operator.ceilings.total_daily,
            operator.gate.reason if operator.gate.paused else None,
        )
        await interaction.followup.send(embed=embed, ephemeral=True)

    @app_commands.command(name="cap", description="Set one server's daily cap in units.")
    @app_commands.describe(
        server="The server's ID, or dms for all direct messages together.",
        units="Units a day (0: no cap); leave empty for SERVER_DAILY_CAP.",
    )
    async def cap(
        self,
        interaction: discord.Interaction[ImagineBot],
        server: ServerId,
        units: app_commands.Range[int, 0, MAX_CAP] | None = None,
    ) -> None:
        key = parse_server(server)
        if key is None:
            await private(interaction, texts.bad_server(server))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.operator.set_cap(interaction.user.id, key, units)
        name = texts.server_name(key, self._server_name)
        default = self.bot.operator.ceilings.server_daily
        await followup(interaction, texts.cap_set(name, units, default))

    @app_commands.command(name="ban-user", description="Stop a user from generating anywhere.")
    @app_commands.describe(user="Who (in every server and in DMs).", reason="Kept in the log.")
    async def ban_user(
        self,
        interaction: discord.Interaction[ImagineBot],
        user: discord.User,
        reason: app_commands.Range[str, 1, 300] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        banned = await self.bot.operator.ban_user(interaction.user.id, user.id, reason)
        await followup(interaction, texts.user_banned(user.id, banned))

    @app_commands.command(name="unban-user", description="Let a banned user generate again.")
    @app_commands.describe(user="Who.")
    async def unban_user(
        self, interaction: discord.Interaction[ImagineBot], user: discord.User
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        unbanned = await self.bot.operator.unban_user(interaction.user.id, user.id)
        await followup(interaction, texts.user_unbanned(user.id, unbanned))

    @app_commands.command(name="ban-server", description="Turn the bot off in a server.")
    @app_commands.describe(server="The server's ID.", reason="Kept in the log.")
    async def ban_server(
        self,
        interaction: discord.Interaction[ImagineBot],
        server: ServerId,
        reason: app_commands.Range[str, 1, 300] | None = None,
    ) -> None:
        key = parse_server(server)
        if not key:
            await private(interaction, texts.bad_server(server))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        name = texts.server_name(key, self._server_name)
        banned = await self.bot.operator.ban_server(interaction.user.id, key, reason)
        await followup(interaction, texts.server_banned(name, banned))

    @app_commands.command(name="unban-server", description="Turn the bot on again in a server.")
    @app_commands.describe(server="The server's ID.")
    async def unban_server(
        self, interaction: discord.Interaction[ImagineBot], server: ServerId
    ) -> None:
        key = parse_server(server)
        if not key:
            await private(interaction, texts.bad_server(server))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        name = texts.server_name(key, self._server_name)
        unbanned = await self.bot.operator.unban_server(interaction.user.id, key)
        await followup(interaction, texts.server_unbanned(name, unbanned))

    @app_commands.command(name="block", description="Block a term in every server and DM.")
    @app_commands.describe(term="On top of each server's own blocklist; any spelling is caught.")
    async def block(
        self, interaction: discord.Interaction[ImagineBot], term: app_commands.Range[str, 2, 100]
    ) -> None:
        await self._change_term(
            interaction, "block", term, self.bot.moderation.add_global_term, texts.term_blocked
        )

    @app_commands.command(name="unblock", description="Take a term off the bot's blocklist.")
    @app_commands.describe(term="The term, in any spelling.")
    async def unblock(
        self, interaction: discord.Interaction[ImagineBot], term: app_commands.Range[str, 2, 100]
    ) -> None:
        await self._change_term(
            interaction,
            "unblock",
            term,
            self.bot.moderation.remove_global_term,
            texts.term_unblocked,
        )

    async def _change_term(
        self,
        interaction: discord.Interaction[ImagineBot],
        action: str,
        term: str,
        change: Callable[[str], Awaitable[bool]],
        text: Callable[[str, bool], str],
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        changed = await change(term)  # a full blocklist: the bot's error handler answers
        if changed:
            await self.bot.operator.log_term(interaction.user.id, action, term)
        await followup(interaction, text(term, changed))

    @app_commands.command(name="pause", description="Pause all generation.")
    @app_commands.describe(reason="What members are told (for example: maintenance until 18:00).")
    async def pause(
        self,
        interaction: discord.Interaction[ImagineBot],
        reason: app_commands.Range[str, 1, 200] = "maintenance",
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        changed = await self.bot.operator.pause(interaction.user.id, reason)
        await followup(interaction, texts.paused_text(changed, reason))

    @app_commands.command(name="resume", description="Resume generation after a pause.")
    async def resume(self, interaction: discord.Interaction[ImagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        resumed = await self.bot.operator.resume(interaction.user.id)
        await followup(interaction, texts.resumed_text(resumed))

    @app_commands.command(name="log", description="The operator's latest actions.")
    async def actions(self, interaction: discord.Interaction[ImagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        embed = texts.actions_embed(await self.bot.operator.actions(15))
        await interaction.followup.send(embed=embed, ephemeral=True)

    def _server_name(self, guild_id: int) -> str | None:
        guild = self.bot.get_guild(guild_id)
        return guild.name if guild is not None else None


async def setup(bot: ImagineBot) -> None:
    guild_id = bot.settings.owner_guild_id
    if guild_id is None:
        return  # no OWNER_GUILD_ID: no owner commands anywhere
    await bot.add_cog(OwnerCog(bot), guild=discord.Object(guild_id))
