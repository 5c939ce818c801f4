"""The bot class: holds the core services, loads the cogs, syncs commands, tracks running jobs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot import messages
from bot.audit import AuditLog
from bot.credits import Balance, CreditWatch
from bot.delivery import NO_PINGS, DiscordReply
from bot.jobs import FailureKind, JobService
from bot.moderation import Moderation
from bot.policy import ServerAdmin
from bot.quota import QuotaBook
from bot.settings import Settings
from bot.store import Job, Store

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.imagine",
    "cogs.results",
    "cogs.quota",
    "cogs.history",
    "cogs.moderation",
    "cogs.server",
)
SHUTDOWN_NOTICE_SECONDS = 5.0


class ImagineTree(app_commands.CommandTree["ImagineBot"]):
    """Maps errors to replies in one place: known ones become short private messages."""

    async def on_error(
        self, interaction: discord.Interaction[ImagineBot], error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, app_commands.CheckFailure):
            if interaction.response.is_done():
                return  # the check has already told the member why
            text = "You can't use this command here."
        else:
            command = interaction.command.name if interaction.command else "?"
            log.error("command /%s failed", command, exc_info=error)
            text = messages.generic_error()
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not send an error reply", exc_info=True)


class ImagineBot(commands.Bot):
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        quota: QuotaBook,
        jobs: JobService,
        moderation: Moderation,
        admin: ServerAdmin,
        credits: CreditWatch,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            tree_cls=ImagineTree,
            # No message from this bot may ping anyone unless it says so explicitly.
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.settings = settings
        self.store = store
        self.quota = quota
        self.jobs = jobs
        self.moderation = moderation
        self.admin = admin
        self.credits = credits
        self.audit = AuditLog(self, moderation)
        self.accepting_jobs = True
        self._job_tasks: dict[asyncio.Task[None], DiscordReply] = {}

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()
        await self.resume_unfinished_jobs()

    async def resume_unfinished_jobs(self) -> None:
        """Pick up every job a previous run left open (a restart, a crash, a deploy)."""
        unfinished = await self.jobs.unfinished()
        for job in unfinished:
            self.start_job(job)
        if unfinished:
            log.info("resumed %d unfinished jobs", len(unfinished))

    def start_job(self, job: Job) -> None:
        """Run a job in the background, keeping a reference so it is not garbage collected."""
        reply = DiscordReply(
            self, job, min_interval=self.settings.progress_min_interval, audit=self.audit
        )
        task = asyncio.create_task(self._run_job(job, reply), name=f"job-{job.id}")
        self._job_tasks[task] = reply
        task.add_done_callback(self._forget_job)

    async def _run_job(self, job: Job, reply: DiscordReply) -> None:
        failure = await self.jobs.run(job, reply)
        # Each finished job is a chance to notice a low balance before members run into it.
        low = await self.credits.after_job(out_of_credits=failure is FailureKind.OUT_OF_CREDITS)
        if low is not None:
            await self.warn_owners(low, job.guild_id)

    async def warn_owners(self, balance: Balance, guild_id: int | None) -> None:
        """DM the bot's owner (who pays kie.ai) and the server's owner about a low balance."""
        owners: set[int] = set()
        try:
            app = await self.application_info()
            owners.add(app.team.owner_id if app.team and app.team.owner_id else app.owner.id)
        except discord.HTTPException:
            log.warning("could not look up the bot's owner to warn about credits")
        guild = self.get_guild(guild_id) if guild_id is not None else None
        if guild is not None and guild.owner_id is not None:
            owners.add(guild.owner_id)
        text = messages.low_credits_warning(balance)
        for owner_id in owners:
            try:
                user = await self.fetch_user(owner_id)
                await user.send(text, allowed_mentions=NO_PINGS)
            except discord.HTTPException as error:
                log.warning("could not warn owner %s about credits: %s", owner_id, error.status)

    def _forget_job(self, task: asyncio.Task[None]) -> None:
        self._job_tasks.pop(task, None)

    @property
    def running_jobs(self) -> int:
        return len(self._job_tasks)

    def health(self) -> dict[str, object]:
        """For /healthz: healthy while connected to Discord and not shutting down."""
        connected = self.is_ready() and not self.is_closed()
        return {
            "ok": connected and self.accepting_jobs,
            "discord_connected": connected,
            "accepting_jobs": self.accepting_jobs,
            "running_jobs": self.running_jobs,
            "waiting_jobs": self.jobs.run_queue.waiting(),
        }

    async def close(self) -> None:
        """Stop taking work; running jobs stay open in the database and resume on next start."""
        self.accepting_jobs = False
        running = dict(self._job_tasks)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
            log.info("left %d running jobs to the next start", len(running))
            # Best effort and brief: Docker gives a stopping container about ten seconds.
            notices = [reply.show_paused() for reply in running.values()]
            try:
                async with asyncio.timeout(SHUTDOWN_NOTICE_SECONDS):
                    await asyncio.gather(*notices, return_exceptions=True)
            except TimeoutError:
                log.warning("not every waiting member could be told about the restart")
        try:
            async with asyncio.timeout(SHUTDOWN_NOTICE_SECONDS):
                await self.jobs.drain()
        except TimeoutError:
            log.warning("not every refunded member could be told before shutting down")
        await self.jobs.polls.stop()
        await super().close()

    # --- command sync -------------------------------------------------------------------------

    async def sync_commands(self) -> None:
        """Sync only when the definitions changed: Discord allows 200 command creates a day."""
        mode = self.settings.command_sync
        if mode == "never":
            return
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        if guild is not None:
            # A development guild gets the commands instantly; global ones take up to an hour.
            self.tree.copy_global_to(guild=guild)
        scope = f"{self.application_id}:{guild.id if guild else 'global'}"
        fingerprint = self.command_fingerprint(guild)
        if mode == "auto" and await self.store.get_meta(f"commands:{scope}") == fingerprint:
            log.info("slash commands unchanged; not syncing")
            return
        try:
            synced = await self.tree.sync(guild=guild)
        except discord.HTTPException as error:
            # Commands synced earlier keep working; try again on the next start.
            log.error("could not sync slash commands (%s %s)", error.status, error.text)
            return
        await self.store.set_meta(f"commands:{scope}", fingerprint)
        where = f"development guild {guild.id}" if guild else "all servers"
        log.info("synced %d slash commands to %s", len(synced), where)

    def command_fingerprint(self, guild: discord.abc.Snowflake | None) -> str:
        commands_ = self.tree.get_commands(guild=guild)
        payload = sorted(
            (command.to_dict(self.tree) for command in commands_), key=lambda c: c["name"]
        )
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
