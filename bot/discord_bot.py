"""The bot class: holds the core services, loads the cogs, syncs commands, answers errors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from typing import Any, cast

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot import i18n
from bot.accounts import KieAccounts
from bot.admin_events import AdminEvents
from bot.admission import Admission, Asker
from bot.alerts import OperatorAlerts
from bot.changes import SharedChanges
from bot.departures import ServerDepartures
from bot.domain import ChangeRefused
from bot.generation import Generation
from bot.history import History
from bot.job_tasks import JobRunner
from bot.jobs import JobService
from bot.kie.credits import CreditWatch
from bot.metrics import Metrics
from bot.moderation import Moderation
from bot.operator import OperatorControls
from bot.policy import ServerAdmin
from bot.quota import QuotaBook
from bot.relay import CallbackRelay
from bot.settings import Settings
from bot.store import Storage
from bot.tray import ReferenceTray
from bot.ui import messages, server_messages
from bot.ui.deferral import Deferrals
from bot.ui.locale import CatalogueTranslator, localize
from bot.ui.progress_edits import ProgressEdits
from bot.ui.reply import NO_PINGS

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.imagine",
    "cogs.references",
    "cogs.results",
    "cogs.cancel",
    "cogs.quota",
    "cogs.history",
    "cogs.help",
    "cogs.settings",
    "cogs.welcome",
    "cogs.departures",
    "cogs.moderation",
    "cogs.server",
    "cogs.owner",  # registers nothing unless OWNER_GUILD_ID is set
)
OWNER_GROUP = "owner"
# REST connections to Discord for discord.py's own calls (edits, followups, images), per host.
# Its default has no limit: a burst's hundreds of waiting edits, let go at once, would open
# hundreds of TLS connections in the same moment (and overflow a server's accept queue, which
# drops them for a second). Past this many at once they wait for a free one instead.
DISCORD_CONNECTIONS_PER_HOST = 64
OPERATORS_TTL = 600.0
READINESS_DB_SECONDS = 2.0


class ImagineTree(app_commands.CommandTree["ImagineBot"]):
    """Turns every command away where the bot is not enabled (a server not allowed or banned,
    or DMs while they are off) before the command itself runs, and answers every command's
    error in one place (`answer_error`)."""

    async def interaction_check(self, interaction: discord.Interaction[ImagineBot]) -> bool:
        # The command's top-level name as Discord sent it (a group's name for its
        # subcommands): `interaction.command` would look the command up a second time.
        data = cast("dict[str, Any]", interaction.data or {})
        if data.get("name") == OWNER_GROUP:
            return True  # the operator's own commands check their user instead (in English)
        localize(interaction)  # the command, its checks and its error answer speak it
        return await interaction.client.gate_passed(interaction)

    async def on_error(
        self, interaction: discord.Interaction[ImagineBot], error: app_commands.AppCommandError
    ) -> None:
        command = interaction.command.name if interaction.command else "?"
        await answer_error(interaction, error, f"command /{command}")


async def answer_error(
    interaction: discord.Interaction[ImagineBot], error: Exception, what: str
) -> None:
    """The one answer to anything a command or a button press raised: known errors become
    short private messages; unknown ones are logged with the traceback and get an apology."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, app_commands.CheckFailure):
        if interaction.response.is_done():
            return  # the check has already told the member why
        text = messages.not_here()
    elif isinstance(error, ChangeRefused):
        text = server_messages.change_refused(error)  # a change the rules do not allow
    else:
        log.error("%s failed", what, exc_info=error)
        text = messages.generic_error()
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
        else:
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)
    except discord.HTTPException:
        log.warning("could not send an error reply", exc_info=True)


class ImagineBot(commands.Bot):
    """The discord.py bot, and only that: loads the cogs, syncs the slash commands, resumes the
    jobs a previous run left open, gates every command, and stops cleanly.

    Built once by `bot/__main__.py` with every core service passed in (the cogs reach them as
    its attributes) and lives as long as the process. It owns no job tasks (`JobRunner` does)
    and makes no decisions of the core's: it translates between Discord and the core.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        quota: QuotaBook,
        jobs: JobService,
        moderation: Moderation,
        admin: ServerAdmin,
        credits: CreditWatch,
        operator: OperatorControls,
        alerts: OperatorAlerts,
        admission: Admission,
        generation: Generation,
        admin_events: AdminEvents,
        history: History,
        runner: JobRunner,
        tray: ReferenceTray,
        departures: ServerDepartures,
        relay: CallbackRelay,
        progress_edits: ProgressEdits,
        metrics: Metrics | None = None,
        changes: SharedChanges | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.changes = changes
        super().__init__(
            # Slash commands only: no prefix command (not even `@bot help`) is ever run.
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=discord.Intents.default(),
            tree_cls=ImagineTree,
            # No message from this bot may ping anyone unless it says so explicitly.
            allowed_mentions=discord.AllowedMentions.none(),
            # Every REST call counted by method and status for /metrics.
            http_trace=self.metrics.discord_trace(),
            **shard_options(settings),
        )
        self.settings = settings
        self.storage = storage
        self.quota = quota
        self.jobs = jobs
        self.moderation = moderation
        self.admin = admin
        self.credits = credits
        self.operator = operator
        self.alerts = alerts
        self.admission = admission
        self.generation = generation
        self.admin_events = admin_events
        self.history = history
        self.runner = runner
        self.tray = tray
        self.departures = departures
        self.relay = relay  # kie.ai's callbacks, to whichever process runs the job
        self.progress_edits = progress_edits  # every reply's "position N" and "generating" edits
        self._operators: tuple[float, tuple[int, ...]] | None = None
        # The first answer to image requests, lean (see the module): Route.BASE is read per
        # call, as discord.py reads it.
        self.deferrals = Deferrals(
            lambda: discord.http.Route.BASE, self.metrics.discord_call, self.http.user_agent
        )

    async def on_message(self, message: discord.Message, /) -> None:
        """Messages are never commands here: the bot answers slash commands and buttons only."""

    def dispatch(self, event_name: str, /, *args: Any, **kwargs: Any) -> None:
        """discord.py's, plus `form_submitted` for a form's submission (the Edit form's, read
        by cogs/results.py even after a restart). Listening for every `interaction` instead
        would make discord.py start a task per interaction: in a burst, thousands of tasks that
        return at once, on the loop that owes each command its acknowledgement."""
        super().dispatch(event_name, *args, **kwargs)
        if event_name == "interaction":
            (interaction,) = args
            if interaction.type is discord.InteractionType.modal_submit:
                super().dispatch("form_submitted", interaction)

    async def login(self, token: str) -> None:
        if self.http.connector is discord.utils.MISSING:  # not given by a test or a caller
            self.http.connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=DISCORD_CONNECTIONS_PER_HOST
            )
        await super().login(token)

    async def setup_hook(self) -> None:
        self.deferrals.start()
        await self.operator.load()
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.tree.set_translator(CatalogueTranslator())
        await self.sync_commands()
        if self.jobs.accounts is not None:
            # The servers' own kie.ai keys, before any resumed job picks its account.
            await self.jobs.accounts.load()
        if self.changes is not None:
            await self.changes.start()  # after the loads above: what they read is current
        # Listening before any job waits, so no relayed callback for a resumed job is missed.
        self.relay.start()
        await self.runner.resume()

    def jobs_accounts(self) -> KieAccounts:
        """Which kie.ai account serves which server (`/server kie-key`)."""
        if self.jobs.accounts is None:
            raise RuntimeError("the bot was built without kie.ai accounts")
        return self.jobs.accounts

    async def gate_passed(self, interaction: discord.Interaction[ImagineBot]) -> bool:
        """False (after a private answer) where the bot is not enabled for this interaction."""
        refusal = await self.admission.gate(interaction.guild_id)
        if refusal is None:
            return True
        with contextlib.suppress(discord.HTTPException):
            await interaction.response.send_message(
                messages.refusal_text(refusal), ephemeral=True, allowed_mentions=NO_PINGS
            )
        asker = Asker(interaction.user.id, interaction.guild_id, interaction.channel_id)
        await self.admission.record(asker, refusal)
        return False

    @property
    def accepting_jobs(self) -> bool:
        return self.runner.accepting

    @accepting_jobs.setter
    def accepting_jobs(self, accepting: bool) -> None:
        self.runner.accepting = accepting

    async def operator_ids(self) -> tuple[int, ...]:
        """The application's owner, or every member of its team (looked up every 10 minutes)."""
        now = time.monotonic()
        if self._operators is None or now - self._operators[0] > OPERATORS_TTL:
            app = await self.application_info()
            ids = tuple(m.id for m in app.team.members) if app.team else (app.owner.id,)
            self._operators = (now, ids)
        return self._operators[1]

    async def is_operator(self, user: discord.abc.User) -> bool:
        try:
            return user.id in await self.operator_ids()
        except discord.HTTPException:
            log.warning("could not look up the bot's owner")
            return False

    async def tell_operator(self, text: str) -> bool:
        """Post an alert to OPS_CHANNEL_ID, or else (or if that fails) DM the application's
        owner, or every member of its team. True when it reached someone."""
        channel_id = self.settings.ops_channel_id
        if channel_id is not None:
            try:
                await self.get_partial_messageable(channel_id).send(text, allowed_mentions=NO_PINGS)
                return True
            except discord.HTTPException as error:
                log.warning("could not post to OPS_CHANNEL_ID (%s); trying DMs", error.status)
        try:
            owners = await self.operator_ids()
        except discord.HTTPException:
            log.warning("could not look up the bot's owner to alert them")
            return False
        delivered = False
        for owner_id in owners:
            try:
                user = await self.fetch_user(owner_id)
                await user.send(text, allowed_mentions=NO_PINGS)
                delivered = True
            except discord.HTTPException as error:
                log.warning("could not alert owner %s by DM: %s", owner_id, error.status)
        return delivered

    @property
    def running_jobs(self) -> int:
        return self.runner.running

    def liveness(self) -> dict[str, object]:
        """For /healthz: the process and its loop answer; the figures are for people."""
        return {
            "discord_connected": self.is_ready() and not self.is_closed(),
            "accepting_jobs": self.accepting_jobs,
            "running_jobs": self.running_jobs,
            "waiting_jobs": self.jobs.run_queue.waiting(),
        }

    async def readiness(self) -> dict[str, object]:
        """For /readyz: connected to Discord, taking work, and the database writable; kie.ai's
        circuit breaker is reported (`kie`) but does not make the bot unready."""
        report = self.liveness()
        # Shielded: a database call cut off midway could leave a transaction open.
        try:
            writable = await asyncio.wait_for(
                asyncio.shield(self.storage.writable()), READINESS_DB_SECONDS
            )
        except TimeoutError:
            writable = False
        report["database_writable"] = writable
        # Shown, not judged: with kie.ai down the bot still answers, queues and keeps units;
        # an orchestrator restarting it would only lose the waiting replies' live updates.
        report["kie"] = self.jobs.kie_breaker.status.as_dict()
        report["ok"] = bool(report["discord_connected"] and self.accepting_jobs and writable)
        return report

    async def close(self) -> None:
        """Stop taking work; running jobs stay open in the database and resume on next start."""
        self.runner.stop_accepting()
        await self.generation.settle()  # commands between their checks and their charge
        await self.runner.shutdown()
        await self.progress_edits.close()  # the waiting replies already say they are waiting
        if self.changes is not None:
            await self.changes.stop()
        await self.relay.stop()
        await self.departures.stop()
        await super().close()
        await self.deferrals.close()

    # --- command sync -------------------------------------------------------------------------

    async def sync_commands(self) -> None:
        """Sync only when the definitions changed: Discord allows 200 command creates a day."""
        mode = self.settings.command_sync
        if mode == "never":
            return
        dev = self.settings.dev_guild_id
        guild = discord.Object(dev) if dev else None
        if guild is not None:
            # A development guild gets the commands instantly; global ones take up to an hour.
            self.tree.copy_global_to(guild=guild)
        scopes = [guild]
        owner_guild = self.settings.owner_guild_id
        if owner_guild is not None and owner_guild != dev:
            scopes.append(discord.Object(owner_guild))  # /owner lives there alone
        for scope in scopes:
            await self._sync_scope(scope, mode)

    async def _sync_scope(self, guild: discord.Object | None, mode: str) -> None:
        scope = f"{self.application_id}:{guild.id if guild else 'global'}"
        fingerprint = self.command_fingerprint(guild)
        key, meta = f"commands:{scope}", self.storage.meta
        stored = await meta.get(key)
        if mode == "auto":
            if stored == fingerprint:
                log.info("slash commands unchanged; not syncing")
                return
            # Several processes starting together: the one that moves the stored fingerprint
            # from what it read to the new one syncs; the others leave it to that one.
            if not await meta.compare_and_set(key, stored, fingerprint):
                log.info("slash commands are being synced by another process")
                return
        try:
            synced = await self.tree.sync(guild=guild)
        except discord.HTTPException as error:
            # Commands synced earlier keep working; try again on the next start.
            log.error("could not sync slash commands (%s %s)", error.status, error.text)
            if mode == "auto":  # unclaim it, so the next start tries again
                if stored is None:
                    await meta.delete(key)
                else:
                    await meta.compare_and_set(key, fingerprint, stored)
            return
        await meta.set(key, fingerprint)
        where = f"server {guild.id}" if guild else "all servers"
        log.info("synced %d slash commands to %s", len(synced), where)

    def command_fingerprint(self, guild: discord.abc.Snowflake | None) -> str:
        commands_ = self.tree.get_commands(guild=guild)
        payload = sorted(
            (command.to_dict(self.tree) for command in commands_), key=lambda c: c["name"]
        )
        # The localizations come from the catalogues: a changed translation is a change too.
        signed = {"commands": payload, "catalogues": i18n.catalogue_fingerprint()}
        return hashlib.sha256(json.dumps(signed, sort_keys=True).encode()).hexdigest()


class ShardedImagineBot(ImagineBot, commands.AutoShardedBot):
    """The same bot over discord.py's auto-sharded client (SHARD_COUNT set): one connection per
    shard this process runs (SHARD_IDS, or all of them), as Discord requires past 2,500
    servers. Any process can finish any job (delivery needs only the interaction token or the
    channel), so which shard a server is on matters only for the events it receives."""


def shard_options(settings: Settings) -> dict[str, Any]:
    """The client's shard arguments: none unsharded; else the count and this process's ids."""
    if settings.shard_count is None:
        return {}
    options: dict[str, Any] = {"shard_count": settings.shard_count}
    if settings.shard_ids is not None:
        options["shard_ids"] = list(settings.shard_ids)
    return options


def bot_class(settings: Settings) -> type[ImagineBot]:
    """Sharded when SHARD_COUNT is set; the plain client (one connection) otherwise."""
    return ShardedImagineBot if settings.shard_count is not None else ImagineBot
