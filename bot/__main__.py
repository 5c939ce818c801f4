"""The composition root: `python -m bot` (or `imagine-bot`).

The only place that reads the environment, opens the shared aiohttp session and the database,
builds the services and hands them to the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import discord
import yarl
from dotenv import find_dotenv, load_dotenv

from bot import i18n
from bot.accounts import Account, KieAccounts, SecretKeyLost
from bot.admin_events import AdminEvents
from bot.admission import Admission
from bot.alerts import AlertKind, OperatorAlerts
from bot.changes import SharedChanges, Topic
from bot.departures import ServerDepartures
from bot.discord_bot import ImagineBot, bot_class
from bot.domain import Job
from bot.generation import Generation, Unanswered
from bot.healthcheck import HEARTBEAT_EVERY, heartbeat_path, touch
from bot.history import History
from bot.images import Reencoder
from bot.job_tasks import JobReply, JobRunner
from bot.jobs import FailureKind, JobLimits, JobService
from bot.keyvault import KeyVault
from bot.kie import (
    QUERY_LIMIT,
    SUBMIT_LIMIT,
    BreakerState,
    CircuitBreaker,
    KieAuthError,
    KieClient,
    KieError,
    RetryPolicy,
)
from bot.kie.credits import CreditWatch
from bot.kie.polling import PollScheduler
from bot.kie.ratelimit import SlidingWindowLimiter
from bot.leases import Leases
from bot.logsafety import configure_logging
from bot.looplag import LoopLagMonitor
from bot.memory import keep_freed_memory
from bot.metrics import Metrics
from bot.metrics_endpoint import MetricsEndpoint, MetricsServer
from bot.moderation import Moderation
from bot.netguard import FetchPolicy, guarded_session
from bot.operator import Ceilings, OperatorControls, PauseGate
from bot.policy import ServerAdmin
from bot.quota import Costs, QuotaBook
from bot.ratebudget import SharedWindows
from bot.redelivery import RedeliveryPolicy
from bot.relay import CallbackRelay
from bot.retention import HistoryRetention
from bot.runslots import SharedSlots
from bot.settings import Settings, SettingsError, bind_host, load_settings, read_one
from bot.single import SingleProcessLock
from bot.store import (
    DatabaseInUse,
    DatabaseTarget,
    DatabaseTooNew,
    DatabaseUnavailable,
    PostgresTarget,
    Storage,
    open_storage,
)
from bot.store.backup import BackupError, backup_database
from bot.store.move import MoveError, MoveSummary, move_to_postgres
from bot.tray import ReferenceTray
from bot.ui import messages
from bot.ui.audit import AuditLog
from bot.ui.batch_reply import BatchReplies
from bot.ui.locale import guild_locale
from bot.ui.progress_edits import ProgressEdits
from bot.ui.reply import DiscordReply
from bot.webhook import WebhookServer

log = logging.getLogger("bot")


class StartupError(Exception):
    """A problem that stops the bot before it runs; the message is one safe sentence."""


def point_discord_at(settings: Settings) -> None:
    """Send discord.py to a local fake Discord (tests, benchmarks). A no-op in production."""
    if settings.discord_api_base:
        discord.http.Route.BASE = settings.discord_api_base
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def build_kie_client(
    session: aiohttp.ClientSession,
    settings: Settings,
    *,
    submit_limit: tuple[int, float] = SUBMIT_LIMIT,
    query_limit: tuple[int, float] = QUERY_LIMIT,
    retry: RetryPolicy | None = None,
) -> KieClient:
    """The kie.ai client, held to kie.ai's documented limits unless a test says otherwise."""
    # Small margins: kie.ai counts arrivals, and the network may bunch our requests together.
    return KieClient(
        session,
        fetch_policy=fetch_policy(settings),
        api_key=settings.kie_api_key,
        base_url=settings.kie_api_base,
        upload_base_url=settings.kie_upload_base,
        submit_limiter=SlidingWindowLimiter(*submit_limit, margin=0.25),
        query_limiter=SlidingWindowLimiter(*query_limit, margin=0.05),
        request_timeout=settings.request_timeout,
        retry=retry,
        breaker=CircuitBreaker(
            threshold=settings.kie_breaker_failures, cooldown=settings.kie_breaker_cooldown
        ),
    )


# kie.ai's price for a flex 1K image as third-party lists give it (unconfirmed; the notes say
# 14): only for the start-up log line's rough "how many images" figure.
CREDITS_PER_1K_IMAGE = 14
START_CHECK_SECONDS = 15.0
OPTIMIZE_EVERY = 6 * 3600.0  # seconds between refreshes of the query planner's statistics
# The garbage collector's thresholds (CPython's: 700, 10, 10). Allocations between young
# collections: fewer, larger passes. Young collections per middle one: a middle collection
# walks every object that survived the young ones since the last, and in a burst thousands of
# waiting commands' objects survive (at 10, passes of 60–86 ms). Middle collections per full
# one: a full collection walks every object not set aside at start-up (230 ms with 3,000
# commands waiting), so it comes ten times more rarely than CPython's; cycles that outlive
# the middle generation wait longer to be freed, which the benchmark's peak RSS covers.
GC_YOUNG_THRESHOLD = 10_000
GC_MIDDLE_THRESHOLD = 3
GC_OLD_THRESHOLD = 100


def fetch_policy(settings: Settings) -> FetchPolicy:
    """What the bot may fetch: https from public addresses, plus the hosts the operator trusts
    (TRUSTED_DOWNLOAD_HOSTS and kie.ai's configured endpoints)."""
    return FetchPolicy.trusting(
        settings.trusted_download_hosts, settings.kie_api_base, settings.kie_upload_base
    )


def http_session(settings: Settings) -> aiohttp.ClientSession:
    """The outgoing session for kie.ai and downloads, held to `fetch_policy`."""
    return guarded_session(fetch_policy(settings))


def build_bot(
    settings: Settings,
    storage: Storage,
    kie: KieClient,
    *,
    reencoder: Reencoder | None = None,
    clock: Callable[[], float] = time.time,
) -> ImagineBot:
    """The bot and its services. `reencoder` (one worker process for oversize images) is the
    caller's to close; without one (tests), the bot gets its own, whose worker, if it was ever
    started, ends when the bot is garbage-collected or the process exits. `clock` is the
    reference tray's and the departures' (tests move it by an hour, or a month)."""
    # What one process changes in the rules it keeps in memory, the others sharing the
    # database reload.
    changes = SharedChanges(storage.meta, shared=storage.backend.several_processes)
    if storage.rate_windows is not None:
        # Other processes may use the same keys: kie.ai's limits are spent together.
        kie.share_limits(
            SharedWindows(storage.rate_windows, request_timeout=settings.request_timeout)
        )
    operator = OperatorControls(
        storage.operator,
        storage.meta,
        Ceilings(
            member_daily=settings.max_member_daily,
            server_daily=settings.server_daily_cap or None,
            total_daily=settings.total_daily_cap or None,
        ),
        PauseGate(),
        announce=changes.announce,
    )
    changes.on(Topic.OPERATOR, operator.reload)
    quota = QuotaBook(
        storage.jobs,
        storage.settings,
        operator,
        daily_limit=settings.daily_quota,
        costs=Costs(
            units_1k=settings.cost_1k,
            units_2k=settings.cost_2k,
            units_pro_1k=settings.cost_pro_1k,
            units_pro_2k=settings.cost_pro_2k,
        ),
    )
    alerts = OperatorAlerts(storage.meta)  # routed to Discord once the bot exists, below
    metrics = Metrics()  # this bot's own registry: /metrics shows it
    kie.observe(metrics)
    breaker_levels = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}
    metrics.track(
        "imagine_kie_breaker_state",
        "kie.ai circuit breaker: 0 closed, 1 half-open, 2 open.",
        lambda: breaker_levels[kie.breaker.status.state],
    )

    async def alert_operator(kind: FailureKind) -> bool:
        alert, text = _OPERATOR_ALERTS[kind]
        return await alerts.alert(alert, text())

    limits = JobLimits(
        job_timeout=settings.job_timeout,
        max_image_bytes=settings.max_image_bytes,
        download_timeout=settings.download_timeout,
        min_download=settings.min_download,
        redelivery=RedeliveryPolicy(first_delay=settings.redelivery_delay),
        max_running_per_member=settings.max_running_per_member or None,
        max_running_per_server=settings.max_running_per_server or None,
    )
    # With callbacks on, polling is only a safety net and runs slowly.
    poll_every = (
        settings.callback_poll_interval if settings.public_base_url else settings.poll_interval
    )
    polls = PollScheduler(
        kie,
        min_interval=poll_every,
        reserve_for_wakeups=3 if settings.public_base_url else 0,
        breaker=kie.breaker,
    )
    accounts = KieAccounts(
        Account(kie, polls),
        storage.server_keys,
        storage.meta,
        vault=KeyVault(settings.secret_key) if settings.secret_key else None,
        new_client=kie.with_key,
        # Each key's own status-query budget, polled the same way as the operator's.
        new_polls=lambda client: PollScheduler(
            client,
            min_interval=poll_every,
            reserve_for_wakeups=3 if settings.public_base_url else 0,
            breaker=client.breaker,
        ),
        # A server key's own low-balance watch, at the operator's threshold.
        new_credits=lambda client: CreditWatch(client, threshold=settings.low_credits_warning),
        require_server_keys=settings.require_server_keys,
        owner_guild_id=settings.owner_guild_id,
        announce=changes.announce,
    )
    changes.on(Topic.SERVER_KEYS, accounts.refresh)

    async def alert_server(guild_id: int, kind: FailureKind) -> bool:
        return await bot.admin_events.kie_key_failed(guild_id, kind.value)

    jobs = JobService(
        storage.jobs,
        quota,
        kie,
        limits,
        polls,
        accounts=accounts,
        alert_server=alert_server,
        alert_server_low=lambda guild_id, low: bot.admin_events.kie_key_low(guild_id, low.credits),
        callback_base_url=settings.public_base_url,
        gate=operator.gate,
        alert_operator=alert_operator,
        allow_nsfw=settings.allow_nsfw,
        metrics=metrics,
    )
    metrics.track_queues(
        running_limit=jobs.run_queue.waiting,
        kie_submit=lambda: kie.submit_waiting,
        running=jobs.run_queue.running,
    )
    moderation = Moderation(storage.moderation, storage.settings, announce=changes.announce)
    changes.on(Topic.MODERATION, moderation.reload)
    admin = ServerAdmin(
        storage.settings,
        storage.moderation,
        storage.jobs,
        quota,
        nsfw_permitted=settings.allow_nsfw,
    )
    credits = CreditWatch(kie, threshold=settings.low_credits_warning)
    # The Discord side's audit channel and job replies reach the bot, built last, only once
    # they are called: never before it exists.
    audit = AuditLog(
        lambda channel_id: bot.get_partial_messageable(channel_id),
        moderation,
        guild_locale=lambda guild_id: guild_locale(bot.get_guild(guild_id) if guild_id else None),
    )
    admission = Admission(
        storage.jobs,
        storage.moderation,
        operator,
        moderation,
        quota,
        allowed_guilds=settings.allowed_guild_ids,
        allow_dms=settings.allow_dms,
        shares_server=lambda guild_id: bot.get_guild(guild_id) is not None,
        audit=audit,
        alert_total_cap=lambda: alerts.alert(
            AlertKind.TOTAL_CAP, messages.total_cap_alert(settings.total_daily_cap)
        ),
        metrics=metrics,
        needs_server_key=accounts.refuses,
    )
    reencoder = reencoder or Reencoder()  # shared by every job's reply
    unanswered = Unanswered()  # commands waiting for their first answer go before progress
    progress_edits = ProgressEdits(until_answered=unanswered.quiet)

    def discord_reply(job: Job) -> DiscordReply:
        return DiscordReply(
            bot,
            job,
            min_interval=settings.progress_min_interval,
            audit=audit,
            reencoder=reencoder,
            edits=progress_edits,
        )

    batch_replies = BatchReplies(discord_reply)  # the jobs of a batch share one reply

    def reply_for(job: Job) -> JobReply:
        return batch_replies.member(job) if job.in_batch else discord_reply(job)

    # Each job is leased to the process running it: on PostgreSQL several processes share
    # the jobs, and take over those of a process that dies. SQLite has one process, which
    # runs every open job: no lease is written (two fsynced writes a job, for nothing).
    leases: Leases | None = None
    if storage.backend.several_processes:
        leases = Leases(storage.leases, seconds=settings.lease_seconds)
        # Running limits count every process's jobs (`bot.runslots`); SQLite keeps them here.
        jobs.run_queue.share(SharedSlots(storage.run_slots, leases.owner))
    runner = JobRunner(
        jobs,
        credits,
        alerts,
        reply_for=reply_for,
        low_credits_text=messages.low_credits_alert,
        leases=leases,
    )

    def reshow_reply_for(job: Job) -> DiscordReply:
        # No audit post: the image was audited when it was made, and a re-post costs nothing.
        return DiscordReply(
            bot,
            job,
            min_interval=settings.progress_min_interval,
            reencoder=reencoder,
            edits=progress_edits,
        )

    history = History(storage.jobs, admission, quota, kie, limits, reply_for=reshow_reply_for)
    bot = bot_class(settings)(
        settings=settings,
        storage=storage,
        quota=quota,
        jobs=jobs,
        moderation=moderation,
        admin=admin,
        credits=credits,
        operator=operator,
        alerts=alerts,
        admission=admission,
        generation=Generation(admission, jobs, quota, runner, unanswered),
        admin_events=AdminEvents(admin, moderation, jobs, audit),
        runner=runner,
        tray=ReferenceTray(storage.trays, clock=clock),
        history=history,
        departures=ServerDepartures(
            storage.departures, clock, forget_server=forgetting(moderation, accounts, changes)
        ),
        # A callback that reaches another process (PostgreSQL) wakes the job here, and back;
        # without callbacks there is nothing to relay.
        relay=CallbackRelay(
            jobs, storage.wakeups if settings.public_base_url else None, metrics=metrics
        ),
        progress_edits=progress_edits,
        metrics=metrics,
        changes=changes,
    )
    alerts.route_to(bot.tell_operator)
    return bot


_OPERATOR_ALERTS = {
    FailureKind.MISCONFIGURED: (AlertKind.KEY_REFUSED, messages.key_refused_alert),
    FailureKind.OUT_OF_CREDITS: (
        AlertKind.OUT_OF_CREDITS,
        messages.out_of_credits_alert,
    ),
    FailureKind.FEATURE_DISABLED: (AlertKind.FEATURE_DISABLED, messages.feature_disabled_alert),
}


async def open_server_keys(bot: ImagineBot) -> None:
    """Open the servers' own kie.ai keys, or stop with one sentence if SECRET_KEY was lost."""
    if bot.jobs.accounts is None:
        return
    try:
        await bot.jobs.accounts.load()
    except SecretKeyLost as error:
        raise StartupError(str(error)) from None


async def check_kie_account(kie: KieClient) -> None:
    """Ask kie.ai for the balance once at start: a refused key stops the bot before any
    member pays for it; kie.ai being unreachable does not."""
    try:
        async with asyncio.timeout(START_CHECK_SECONDS):
            credits = await kie.get_credits()
    except TimeoutError:
        log.warning("kie.ai did not tell the balance at start; starting anyway")
        return
    except KieAuthError:
        raise StartupError("KIE_API_KEY was refused by kie.ai.") from None
    except KieError as error:
        log.warning("could not read the kie.ai balance at start (%s); starting anyway", error)
        return
    log.info(
        "kie.ai balance: %.0f credits, roughly %d 1K images",
        credits,
        credits // CREDITS_PER_1K_IMAGE,
    )


def build_webhook_server(settings: Settings, bot: ImagineBot) -> WebhookServer | None:
    """The callback and health-check server, unless WEBHOOK_PORT is 0; it serves `/metrics`
    too unless METRICS_PORT gives that a server of its own."""
    if not settings.webhook_port:
        return None
    return WebhookServer(
        bot.storage.jobs,
        bot.relay,
        host=bind_host(settings),
        port=settings.webhook_port,
        hmac_key=settings.kie_webhook_hmac_key,
        liveness=bot.liveness,
        readiness=bot.readiness,
        callbacks=settings.public_base_url is not None,
        metrics=None if settings.metrics_port else metrics_endpoint(settings, bot),
    )


def metrics_endpoint(settings: Settings, bot: ImagineBot) -> MetricsEndpoint:
    return MetricsEndpoint(bot.metrics, settings.metrics_token)


def build_metrics_server(settings: Settings, bot: ImagineBot) -> MetricsServer | None:
    """`/metrics` on a port of its own, when METRICS_PORT is set."""
    if not settings.metrics_port:
        return None
    return MetricsServer(
        metrics_endpoint(settings, bot), host=settings.metrics_host, port=settings.metrics_port
    )


def database_target(settings: Settings) -> DatabaseTarget:
    """PostgreSQL when DATABASE_URL is set, else the SQLite file at DATABASE_PATH."""
    if settings.database_url:
        return PostgresTarget(settings.database_url)
    return settings.database_path


async def run(settings: Settings) -> None:
    point_discord_at(settings)
    if settings.database_url:
        # PostgreSQL: several processes may share it (cluster mode): each job is leased to one.
        await _run_locked(settings)
        return
    lock = SingleProcessLock(settings.database_path)
    try:
        lock.acquire()
    except DatabaseInUse:
        raise StartupError(
            f"DATABASE_PATH ({settings.database_path}) is in use by another running bot; "
            "only one process may use a database."
        ) from None
    except OSError as error:
        raise StartupError(
            f"DATABASE_PATH ({settings.database_path}) cannot be opened: {error.strerror}."
        ) from None
    try:
        await _run_locked(settings)
    finally:
        lock.release()


async def _run_locked(settings: Settings) -> None:
    target = database_target(settings)
    # The variable the operator set, and the target as it may be shown (never a password).
    where = f"DATABASE_URL ({target.safe})" if isinstance(target, PostgresTarget) else None
    try:
        # A broken translation stops the bot here, with one sentence, not in a member's reply.
        i18n.load_all()
    except Exception as error:
        raise StartupError(
            f"a translation catalogue in {i18n.LOCALES_DIR} is broken: {error}"
        ) from None
    try:
        storage = await open_storage(target)
    except DatabaseUnavailable as error:
        raise StartupError(f"DATABASE_URL cannot be used: {error}.") from None
    except DatabaseTooNew as error:
        if where is not None:
            raise StartupError(
                f"{where} was last used by a newer version of the bot (schema version "
                f"{error.found}; this one knows up to {error.known}): upgrade the bot."
            ) from None
        raise StartupError(
            f"DATABASE_PATH ({settings.database_path}) was last used by a newer version of the "
            f"bot (schema version {error.found}; this one knows up to {error.known}): upgrade "
            "the bot, or point DATABASE_PATH at another file."
        ) from None
    except (OSError, sqlite3.Error) as error:
        raise StartupError(
            f"DATABASE_PATH ({settings.database_path}) cannot be opened: {error}."
        ) from None
    except BackupError as error:  # the copy taken before an upgrade's migrations
        raise StartupError(
            f"DATABASE_PATH ({settings.database_path}) needs an upgrade, and the copy taken "
            f"first failed ({error}); nothing was changed."
        ) from None
    log.info("database: %s", where or f"SQLite at {settings.database_path}")
    try:
        async with http_session(settings) as session:
            kie = build_kie_client(session, settings)
            await check_kie_account(kie)
            reencoder = Reencoder()
            bot = build_bot(settings, storage, kie, reencoder=reencoder)
            await open_server_keys(bot)
            server = build_webhook_server(settings, bot)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, lambda: asyncio.ensure_future(bot.close()))
            if server is not None:
                try:
                    await server.start()
                except OSError as error:
                    problem = (
                        f"WEBHOOK_PORT {settings.webhook_port} cannot be used: {error.strerror}"
                    )
                    if settings.public_base_url:  # callbacks depend on it
                        raise StartupError(f"{problem}.") from None
                    # Only the health check lives there: run without it rather than not at all.
                    log.warning("%s; running without the health check", problem)
                    server = None
            # Without the web server, the health check looks at a heartbeat file instead.
            metrics_server = build_metrics_server(settings, bot)
            if metrics_server is not None:
                try:
                    await metrics_server.start()
                except OSError as error:
                    # Metrics are for the operator's eyes: not a reason to stop serving members.
                    log.warning(
                        "METRICS_PORT %d cannot be used (%s); running without /metrics",
                        settings.metrics_port,
                        error.strerror,
                    )
                    metrics_server = None
            heartbeat = (
                None
                if server is not None
                else asyncio.create_task(beat(heartbeat_path(settings.database_path)))
            )
            statistics = asyncio.create_task(keep_statistics(storage))
            accounts = bot.jobs.accounts
            retention = HistoryRetention(
                storage.jobs,
                settings.history_days,
                time.time,
                departures=bot.departures,
                retired_keys=accounts.sweep if accounts is not None else None,
            )
            expiring = asyncio.create_task(retention.keep())
            lag = LoopLagMonitor(observe=bot.metrics.loop_lag.observe)
            lag.start()
            tune_garbage_collector()
            try:
                async with bot:
                    await bot.start(settings.discord_token)
            except discord.LoginFailure:
                raise StartupError("DISCORD_TOKEN was refused by Discord.") from None
            finally:
                if server is not None:
                    await server.stop()
                if metrics_server is not None:
                    await metrics_server.stop()
                if heartbeat is not None:
                    heartbeat.cancel()
                for background in (statistics, expiring):
                    background.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await background
                await reencoder.close()
                await lag.stop()
    finally:
        await storage.close()


def forgetting(
    moderation: Moderation, accounts: KieAccounts, changes: SharedChanges
) -> Callable[[int], Awaitable[None]]:
    """What a server's configuration being removed drops from memory, in this process and,
    announced, in the others: its rules and its kie.ai key (`ServerDepartures`)."""

    async def forget_server(guild_id: int) -> None:
        await moderation.reload()
        await accounts.refresh()
        for topic in (Topic.MODERATION, Topic.SERVER_KEYS):
            await changes.announce(topic)

    return forget_server


def tune_garbage_collector() -> None:
    """Once everything is built: what start-up made (modules, the command tree, translations)
    lives as long as the bot, so it is set aside from collections (`gc.freeze`), and the young
    generation is collected less often. Collections were about 4 % of the bot's CPU under
    load; each request allocates thousands of short-lived objects, freed by reference counts
    anyway. The older generations' thresholds keep each pause short (see GC_MIDDLE_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, GC_OLD_THRESHOLD)


async def beat(path: Path) -> None:
    """Touch the heartbeat file while the event loop runs."""
    while True:
        try:
            await asyncio.to_thread(touch, path)
        except OSError as error:
            log.warning("could not touch the heartbeat file: %s", error.strerror)
        await asyncio.sleep(HEARTBEAT_EVERY)


async def keep_statistics(storage: Storage, every: float = OPTIMIZE_EVERY) -> None:
    """Refresh the query planner's statistics every few hours while the bot runs (they are
    refreshed at start and at close too), so the plans follow a growing history."""
    while True:
        await asyncio.sleep(every)
        try:
            await storage.optimize()
        except sqlite3.Error as error:
            log.warning("could not refresh the database's statistics: %s", error)


def main() -> None:
    # The .env of the directory the bot is started from; real environment variables win.
    load_dotenv(find_dotenv(usecwd=True))
    if sys.argv[1:2] == ["backup"]:
        sys.exit(backup_command(sys.argv[2:]))
    if sys.argv[1:2] == ["move-to-postgres"]:
        sys.exit(move_command(sys.argv[2:]))
    try:
        settings = load_settings(os.environ)
    except SettingsError as error:
        print(f"imagine-bot: {error}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings)
    keep_freed_memory()
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(run(settings))
    except StartupError as error:
        print(f"imagine-bot: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (every platform but Windows), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def backup_command(args: list[str]) -> int:
    """`imagine-bot backup PATH`: a consistent copy of DATABASE_PATH, the bot running or not."""
    if len(args) != 1:
        print("usage: imagine-bot backup PATH (a new file for the copy)", file=sys.stderr)
        return 2
    if os.environ.get("DATABASE_URL"):
        print("imagine-bot: DATABASE_URL is set: back PostgreSQL up with pg_dump", file=sys.stderr)
        return 2
    try:
        source = Path(read_one("DATABASE_PATH", os.environ))
        backup_database(source, Path(args[0]))
    except (SettingsError, BackupError) as error:
        print(f"imagine-bot: {error}", file=sys.stderr)
        return 1
    print(f"imagine-bot: {source} copied to {args[0]}")
    return 0


MOVE_USAGE = "usage: imagine-bot move-to-postgres [--force] (DATABASE_PATH into DATABASE_URL)"


def move_command(args: list[str]) -> int:
    """`imagine-bot move-to-postgres [--force]`: copy the SQLite database at DATABASE_PATH into
    the PostgreSQL database at DATABASE_URL, the bot stopped."""
    if args not in ([], ["--force"]):
        print(MOVE_USAGE, file=sys.stderr)
        return 2
    try:
        source = Path(read_one("DATABASE_PATH", os.environ))
        url = read_one("DATABASE_URL", os.environ)
    except SettingsError as error:
        print(f"imagine-bot: {error}", file=sys.stderr)
        return 2
    if not url:
        print(
            "imagine-bot: set DATABASE_URL to the PostgreSQL database to move into", file=sys.stderr
        )
        return 2
    target = PostgresTarget(url)
    # The bot's own lock file: held for the whole copy, so no bot starts on the file meanwhile.
    lock = SingleProcessLock(source)
    try:
        lock.acquire()
    except DatabaseInUse:
        print(
            f"imagine-bot: a bot is running on DATABASE_PATH ({source}): stop it first",
            file=sys.stderr,
        )
        return 1
    except OSError as error:
        print(
            f"imagine-bot: DATABASE_PATH ({source}) cannot be opened: {error.strerror}",
            file=sys.stderr,
        )
        return 1
    try:
        summary = asyncio.run(move_to_postgres(source, target, force=args == ["--force"]))
    except DatabaseInUse:
        print(f"imagine-bot: a bot is running on {target.safe}: stop it first", file=sys.stderr)
        return 1
    except DatabaseTooNew as error:
        print(
            f"imagine-bot: a database was last used by a newer version of the bot (schema "
            f"version {error.found}; this one knows up to {error.known}): upgrade the bot",
            file=sys.stderr,
        )
        return 1
    except (MoveError, DatabaseUnavailable, BackupError) as error:
        print(f"imagine-bot: {error}; nothing was moved", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as error:
        print(f"imagine-bot: DATABASE_PATH ({source}) cannot be read: {error}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    print(move_report(source, target, summary))
    return 0


def move_report(source: Path, target: PostgresTarget, summary: MoveSummary) -> str:
    """The few lines `move-to-postgres` prints (the target without its password)."""
    lines = [
        f"imagine-bot: {source} moved into {target.safe} (schema version "
        f"{summary.schema_version}), counts checked:",
        *(f"  {table}: {count} rows" for table, count in summary.rows.items()),
        f"  units charged: {summary.units_charged} (the same on both)",
        "Set DATABASE_URL for the bot and start it; keep the SQLite file as a backup.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
