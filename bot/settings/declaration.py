"""Every setting, declared once: its variable, field, parser, secrecy and documented words."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bot.settings.model import (
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_CAP_SETTING,
    MAX_IMAGE_MB,
    MAX_JOB_TIMEOUT,
    MAX_LEASE_SECONDS,
    MAX_RUNNING_SETTING,
    MAX_SHARDS,
    MAX_UNITS_SETTING,
    SYNC_MODES,
    Settings,
    SettingsError,
)
from bot.settings.parsers import (
    Amount,
    Choice,
    DatabaseUrl,
    FilePath,
    Flag,
    Hosts,
    Parser,
    Port,
    Seconds,
    ShardIds,
    Snowflake,
    Snowflakes,
    Text,
    Url,
    Whole,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: what fills which `Settings` field, how, and what the README
    (`description`, then the parser's range) and `.env.example` (`comment`) say about it.

    `comment` is the one line above the variable in `.env.example` (empty: the line above covers
    it too); `heading` is a line that opens a group there.
    """

    name: str
    field: str
    parser: Parser[T]
    description: str
    comment: str
    secret: bool = False
    heading: str = ""

    @property
    def required(self) -> bool:
        return self._field.default is dataclasses.MISSING

    @property
    def default(self) -> T | None:
        """The `Settings` field's default; None for a required setting."""
        value = self._field.default
        return None if value is dataclasses.MISSING else value

    @property
    def _field(self) -> dataclasses.Field[T]:
        declared: dataclasses.Field[T] = Settings.__dataclass_fields__[self.field]
        return declared

    def read(self, env: Mapping[str, str]) -> T | None:
        raw = env.get(self.name, "").strip()
        if not raw:
            if self.required:
                raise SettingsError(
                    f"{self.name} is not set; add it to your environment or .env file."
                )
            return self.default
        try:
            return self.parser.read(raw)
        except ValueError:
            raise SettingsError(f"{self.name} must be {self.parser.expected}.") from None

    def shown_default(self) -> str:
        """The default as written in `.env`; empty when required or empty."""
        default = self.default
        return "" if default is None else self.parser.show(default)


# In the order of the README's table and `.env.example`.
SETTINGS: tuple[Setting[Any], ...] = (
    Setting(
        "DISCORD_TOKEN",
        "discord_token",
        Text(),
        description="The bot token from the Discord developer portal.",
        comment="Required: the bot token from the Discord developer portal (Bot -> Reset Token).",
        secret=True,
    ),
    Setting(
        "KIE_API_KEY",
        "kie_api_key",
        Text(),
        description="Your kie.ai API key.",
        comment="Required: your kie.ai API key (https://kie.ai/api-key).",
        secret=True,
    ),
    Setting(
        "KIE_API_BASE",
        "kie_api_base",
        Url(),
        description="kie.ai API base URL.",
        comment="kie.ai API base URL.",
    ),
    Setting(
        "KIE_UPLOAD_BASE",
        "kie_upload_base",
        Url(),
        description=(
            "kie.ai's file host, where reference images are copied for image-to-image (same key)."
        ),
        comment=(
            "kie.ai's file host, where reference images are copied for image-to-image (same key)."
        ),
    ),
    Setting(
        "DATABASE_PATH",
        "database_path",
        FilePath(),
        description=(
            "SQLite database file; its directory is created (0700) if missing, and the files are "
            "private (0600). One bot process per database: a second one refuses to start."
        ),
        comment="SQLite database file; its directory is created if missing.",
    ),
    Setting(
        "DATABASE_URL",
        "database_url",
        DatabaseUrl(),
        description=(
            "A PostgreSQL database (`postgresql://user:password@host:5432/imagine`) to use "
            "instead of the SQLite file; see [PostgreSQL](#postgresql). Empty = SQLite at "
            "`DATABASE_PATH` (which still holds the heartbeat file). Only its host and database "
            "are ever logged."
        ),
        comment="A PostgreSQL URL (postgresql://user:password@host/db) instead of SQLite.",
        secret=True,
    ),
    Setting(
        "LEASE_SECONDS",
        "lease_seconds",
        Seconds(MAX_LEASE_SECONDS),
        description=(
            "With several bot processes on one PostgreSQL database, how long a job stays leased "
            "to the process running it without being renewed (every third of it): a process "
            "that dies has its jobs taken over by the others within this time. See "
            "[Several processes](#several-processes)."
        ),
        comment="Seconds a dead process's jobs stay leased before another process takes them.",
    ),
    Setting(
        "SHARD_COUNT",
        "shard_count",
        Whole(1, MAX_SHARDS),
        description=(
            "Discord shards in all (Discord requires sharding past 2,500 servers). Empty = one "
            "unsharded connection. Set alone, this process runs every shard."
        ),
        comment="Discord shards in all; empty = no sharding.",
    ),
    Setting(
        "SHARD_IDS",
        "shard_ids",
        ShardIds(),
        description=(
            "The shards this process runs, like `0,1` (each below `SHARD_COUNT`); the other "
            "processes run the rest. Empty = every shard."
        ),
        comment="The shards this process runs (like 0,1); empty = all of SHARD_COUNT.",
    ),
    Setting(
        "HISTORY_DAYS",
        "history_days",
        Whole(0, 3650),
        description=(
            "Days a finished job keeps its prompt, references and links; older ones are blanked "
            "(checked at start and every 6 hours), keeping units, day and outcome, so quotas, "
            "budgets and reports are unchanged. `0` keeps them forever."
        ),
        comment="Days finished jobs keep their prompts and links (0 = forever).",
    ),
    Setting(
        "DAILY_QUOTA",
        "daily_quota",
        Whole(1, MAX_UNITS_SETTING),
        description=(
            "Units each member may spend per UTC day in each server, unless the server sets its "
            "own (`/server quota`, `/server role-quota`)."
        ),
        comment="Units each member may spend per UTC day.",
    ),
    Setting(
        "MAX_RUNNING_PER_MEMBER",
        "max_running_per_member",
        Whole(0, MAX_RUNNING_SETTING),
        description=(
            "Images one member may have generating at once; more wait in line (`0` = no limit). "
            "Servers may set their own (`/server limits`)."
        ),
        comment=(
            "Images one member may have generating at once (0 = no limit); servers may set their "
            "own."
        ),
    ),
    Setting(
        "MAX_RUNNING_PER_SERVER",
        "max_running_per_server",
        Whole(0, MAX_RUNNING_SETTING),
        description="Images a whole server may have generating at once (`0` = no limit).",
        comment=(
            "Images a whole server may have generating at once (0 = no limit); servers may set "
            "their own."
        ),
    ),
    Setting(
        "LOW_CREDITS_WARNING",
        "low_credits_warning",
        Amount("credits", 0, MAX_CAP_SETTING),
        description=(
            "Below this kie.ai balance (credits), the operator gets an alert, at most once a day "
            "(sooner if the balance halves; `0` = never)."
        ),
        comment=(
            "Alert the operator when the kie.ai balance falls below this many credits (0 = never)."
        ),
    ),
    Setting(
        "COST_2K",
        "cost_2k",
        Whole(1, 1000),
        description="Units a 2K image costs (a 1K image costs 1).",
        comment="Units a 2K image costs (a 1K image costs 1).",
    ),
    Setting(
        "COST_PRO_1K",
        "cost_pro_1k",
        Whole(1, 1000),
        description=(
            "Units a 1K image from the pro model (`/imagine model:pro`) costs. kie.ai lists pro "
            "at 5 credits, flex at 14 (1K, the unit) and 24 (2K): pro costs less than one unit's "
            "worth, so it costs the least there is, 1."
        ),
        comment="Units a 1K image from the pro model costs (kie.ai: 5 credits; a 1K flex is 14).",
    ),
    Setting(
        "COST_PRO_2K",
        "cost_pro_2k",
        Whole(1, 1000),
        description=(
            "Units a 2K image from the pro model costs. kie.ai lists it at 7 credits, still under "
            "a 1K flex image's 14, so 1 unit by default."
        ),
        comment="Units a 2K image from the pro model costs (kie.ai: 7 credits).",
    ),
    Setting(
        "MAX_MEMBER_DAILY",
        "max_member_daily",
        Whole(1, MAX_UNITS_SETTING),
        description=(
            "The most units one member may spend per UTC day in one server, whatever the server's "
            "quotas and grants say (direct messages count as one more server)."
        ),
        comment=(
            "Most units one member may spend per UTC day in one server (DMs count as one more "
            "server)."
        ),
        heading=(
            "The operator's ceilings, which no server setting can lift"
            ' (see "Running a public bot").'
        ),
    ),
    Setting(
        "SERVER_DAILY_CAP",
        "server_daily_cap",
        Whole(0, MAX_CAP_SETTING),
        description=(
            "Units one server may spend per UTC day, all members together; a server's `/server "
            "budget` may be lower, never higher (`0` = no cap). `/owner cap` sets one server's "
            "own."
        ),
        comment="Units one server may spend per UTC day, all members together (0 = no cap).",
    ),
    Setting(
        "TOTAL_DAILY_CAP",
        "total_daily_cap",
        Whole(0, MAX_CAP_SETTING),
        description=(
            "Units per UTC day over every server and DM together; when reached, every request is "
            "refused and the operator is alerted once (`0` = no cap)."
        ),
        comment="Units per UTC day over every server and DM together (0 = no cap).",
    ),
    Setting(
        "ALLOWED_GUILD_IDS",
        "allowed_guild_ids",
        Snowflakes(),
        description=(
            "Server IDs, comma-separated, the bot works in; anywhere else every command is refused "
            "privately. Empty = every server."
        ),
        comment="Server IDs the bot works in, comma-separated; empty = every server.",
    ),
    Setting(
        "OWNER_GUILD_ID",
        "owner_guild_id",
        Snowflake(),
        description=(
            "Your own server's ID: the `/owner` commands are registered there only. Empty = no "
            "owner commands."
        ),
        comment=(
            "Your own server's ID, where the /owner commands appear; empty = no owner commands."
        ),
    ),
    Setting(
        "ALLOW_NSFW",
        "allow_nsfw",
        Flag(),
        description=(
            "`true` lets a server turn kie.ai's safety filter off in its age-restricted channels "
            "(`/server nsfw allow:True`)."
        ),
        comment=(
            "true lets servers turn kie.ai's safety filter off in age-restricted channels (/server "
            "nsfw)."
        ),
    ),
    Setting(
        "ALLOW_DMS",
        "allow_dms",
        Flag(),
        description="`true` lets members use the bot in direct messages.",
        comment="true lets members use the bot in direct messages.",
    ),
    Setting(
        "SECRET_KEY",
        "secret_key",
        Text(),
        description=(
            "A long random secret that seals the servers' own kie.ai keys in the database "
            "(`/server kie-key`). Empty = servers cannot set a key. Keep it: with another one, "
            "the stored keys cannot be read and the bot refuses to start."
        ),
        comment="Long random secret sealing servers' own kie.ai keys; empty = /server kie-key off.",
        secret=True,
    ),
    Setting(
        "REQUIRE_SERVER_KEYS",
        "require_server_keys",
        Flag(),
        description=(
            "`true`: `KIE_API_KEY` serves `OWNER_GUILD_ID` only; every other server needs its "
            "own key (`/server kie-key set`) before its members can generate images."
        ),
        comment="true: KIE_API_KEY serves OWNER_GUILD_ID only; other servers need their own key.",
    ),
    Setting(
        "OPS_CHANNEL_ID",
        "ops_channel_id",
        Snowflake("channel"),
        description=(
            "A channel for operator alerts (refused key, no credits, model off, low balance, total "
            "cap). Empty = DM the application's owner, or every member of its team."
        ),
        comment="A channel ID for operator alerts; empty = DM the application's owner (or team).",
    ),
    Setting(
        "SHOW_CREDITS_TO_SERVERS",
        "show_credits_to_servers",
        Flag(),
        description=(
            "`true`: `/server credits` shows the kie.ai balance; `false`: each server sees only "
            "its own spend."
        ),
        comment=(
            "true shows the kie.ai balance in /server credits; false shows each server its own "
            "spend."
        ),
    ),
    Setting(
        "POLL_INTERVAL_SECONDS",
        "poll_interval",
        Seconds(),
        description="Seconds between status checks of a running task.",
        comment="Seconds between status checks of a running task.",
    ),
    Setting(
        "JOB_TIMEOUT_SECONDS",
        "job_timeout",
        Seconds(MAX_JOB_TIMEOUT),
        description="Give up on a task after this many seconds; the download ends by then too.",
        comment="Give up on a task after this many seconds (at most 3600).",
    ),
    Setting(
        "KIE_BREAKER_FAILURES",
        "kie_breaker_failures",
        Whole(1, 1000),
        description=(
            "kie.ai outages in a row (5xx, maintenance, timeouts, no connection) after which the "
            "bot stops sending it tasks and status checks, keeps waiting members' units reserved, "
            "and probes it with the credit query until it answers. Refusals of a request (a "
            "rejected prompt, the safety filter) do not count."
        ),
        comment="kie.ai outages in a row before the bot stops sending it work for a while.",
    ),
    Setting(
        "KIE_BREAKER_COOLDOWN_SECONDS",
        "kie_breaker_cooldown",
        Seconds(),
        description=(
            "Seconds before the first probe once kie.ai is taken as down; each failed probe "
            "doubles the wait, up to 5 minutes (or this, if longer)."
        ),
        comment="Seconds before the first probe of a kie.ai that is down (doubles, up to 5 min).",
    ),
    Setting(
        "MAX_IMAGE_MB",
        "max_image_bytes",
        Whole(1, MAX_IMAGE_MB, scale=2**20),
        description="Largest image the bot will download, in MB.",
        comment="Largest image the bot will download, in MB.",
    ),
    Setting(
        "DOWNLOAD_TIMEOUT_SECONDS",
        "download_timeout",
        Seconds(),
        description=(
            "Seconds allowed for downloading a finished image (all its links and redirects "
            "together, and never past the job's deadline)."
        ),
        comment="Seconds allowed for downloading a finished image (never past the job's deadline).",
    ),
    Setting(
        "TRUSTED_DOWNLOAD_HOSTS",
        "trusted_download_hosts",
        Hosts(),
        description=(
            "Host names or addresses, comma-separated, the bot may fetch from over plain http or "
            "on loopback/private addresses (any port): local test servers. Everything else must be "
            "https on a public address, at every redirect. The hosts of `KIE_API_BASE` and "
            "`KIE_UPLOAD_BASE` are trusted too."
        ),
        comment=(
            "Hosts the bot may fetch from over http or on internal addresses (local test servers "
            "only)."
        ),
    ),
    Setting(
        "PUBLIC_BASE_URL",
        "public_base_url",
        Url(),
        description=(
            "Public https address of the bot's web server, for kie.ai callbacks; empty = polling "
            "only."
        ),
        comment=(
            "Public https address of this bot's web server, for kie.ai callbacks; empty = polling "
            "only."
        ),
    ),
    Setting(
        "WEBHOOK_HOST",
        "webhook_host",
        Text(),
        description=(
            "Address the web server listens on. Empty = every address when `PUBLIC_BASE_URL` is "
            "set (kie.ai must reach it), else `127.0.0.1` (only the health check lives there)."
        ),
        comment=(
            "Address the web server listens on; empty = every address with callbacks, else "
            "127.0.0.1."
        ),
    ),
    Setting(
        "WEBHOOK_PORT",
        "webhook_port",
        Port(),
        description=(
            "Port of the web server (callbacks, `/healthz`, `/readyz`); `0` turns it off: no "
            "callbacks, and the health check reads a heartbeat file beside the database instead. "
            "If it is taken, the bot runs without it, or refuses to start when callbacks need it."
        ),
        comment="Port of the web server (callbacks, /healthz, /readyz); 0 turns it off.",
    ),
    Setting(
        "KIE_WEBHOOK_HMAC_KEY",
        "kie_webhook_hmac_key",
        Text(),
        description="kie.ai's webhook HMAC key, if you enabled signed callbacks.",
        comment="The webhook HMAC key from kie.ai's settings, if you enabled signed callbacks.",
        secret=True,
    ),
    Setting(
        "CALLBACK_POLL_INTERVAL_SECONDS",
        "callback_poll_interval",
        Seconds(),
        description="Seconds between safety-net status checks when callbacks are on.",
        comment="Seconds between safety-net status checks when callbacks are on.",
    ),
    Setting(
        "METRICS_TOKEN",
        "metrics_token",
        Text(),
        description=(
            "A bearer token for `/metrics` (Prometheus). Empty: `/metrics` answers loopback "
            "addresses only. Set: every request needs `Authorization: Bearer <token>`, from "
            "loopback too (a reverse proxy on the same host makes everyone look local)."
        ),
        comment="Bearer token for /metrics; empty = /metrics answers loopback addresses only.",
        secret=True,
    ),
    Setting(
        "METRICS_HOST",
        "metrics_host",
        Text(),
        description=("Address of the separate metrics server (only with `METRICS_PORT`)."),
        comment="Address of the separate metrics server, with METRICS_PORT.",
    ),
    Setting(
        "METRICS_PORT",
        "metrics_port",
        Port(expected="a port number from 1 to 65535, or 0 for none"),
        description=(
            "A port of its own for `/metrics`, so the public callback port never serves it; "
            "`0`: `/metrics` is on the web server (`WEBHOOK_PORT`)."
        ),
        comment="A port of its own for /metrics; 0 = /metrics is on WEBHOOK_PORT's server.",
    ),
    Setting(
        "DEV_GUILD_ID",
        "dev_guild_id",
        Snowflake(),
        description="A server ID to sync commands to instantly while developing.",
        comment=(
            "A server ID to sync commands to instantly while developing; empty = sync globally."
        ),
    ),
    Setting(
        "COMMAND_SYNC",
        "command_sync",
        Choice(SYNC_MODES),
        description="`auto` (only when changed), `always` or `never`.",
        comment="auto = sync slash commands only when they changed; always; never.",
    ),
    Setting(
        "LOG_LEVEL",
        "log_level",
        Choice(LOG_LEVELS),
        description=(
            "`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`. No level logs a secret: "
            "discord.py's and aiosqlite's request-level lines stay at INFO, and tokens, keys and "
            "callback secrets are blanked from every line."
        ),
        comment="DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    ),
    Setting(
        "LOG_FORMAT",
        "log_format",
        Choice(LOG_FORMATS),
        description=(
            "`text` (readable lines) or `json`: one JSON object per line with `time`, `level`, "
            "`logger` and `message`, plus `job_id`, `guild_id`, `user_id`, `task_id` and "
            "`outcome` where the line is about one (see [Logs](#logs)); secrets are blanked in "
            "both."
        ),
        comment="text or json.",
    ),
    Setting(
        "DISCORD_API_BASE",
        "discord_api_base",
        Url(),
        description="Testing only: a local fake Discord's REST base.",
        comment=(
            "Testing only: point discord.py at a local fake Discord. Leave empty in production."
        ),
    ),
    Setting(
        "DISCORD_GATEWAY_URL",
        "discord_gateway_url",
        Url(),
        description="Testing only: a local fake Discord's gateway.",
        comment="",
    ),
)


def read_one(name: str, env: Mapping[str, str]) -> Any:
    """One setting as the bot would read it (for tools that need only one, like the health
    check); raises `SettingsError` as `load_settings` would."""
    for setting in SETTINGS:
        if setting.name == name:
            return setting.read(env)
    raise KeyError(name)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build `Settings` from environment variables, or raise `SettingsError`."""
    values: dict[str, Any] = {setting.field: setting.read(env) for setting in SETTINGS}
    settings = Settings(**values)
    if settings.public_base_url and not settings.webhook_port:
        raise SettingsError("PUBLIC_BASE_URL needs WEBHOOK_PORT to be a port number, not 0.")
    if settings.shard_ids is not None:
        if settings.shard_count is None:
            raise SettingsError("SHARD_IDS needs SHARD_COUNT (the number of shards in all).")
        if max(settings.shard_ids) >= settings.shard_count:
            raise SettingsError(
                f"SHARD_IDS must be below SHARD_COUNT ({settings.shard_count}): shards are "
                f"numbered from 0."
            )
    return settings
