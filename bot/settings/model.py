"""The bot's settings as one typed value, and the few rules read straight off it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
SYNC_MODES = ("auto", "always", "never")
# kie.ai suggests giving up after 10-15 minutes; an hour is the outer bound.
MAX_JOB_TIMEOUT = 3600.0
MAX_LEASE_SECONDS = 600.0  # a dead process's jobs wait at most this long
MAX_SHARDS = 100_000

# Upper bounds for numbers: far above any sensible value, far below what breaks arithmetic or
# SQLite's 64-bit integers. The README's configuration table gives each variable's range.
MAX_UNITS_SETTING = 1_000_000
MAX_CAP_SETTING = 1_000_000_000
MAX_RUNNING_SETTING = 1000
MAX_SECONDS_SETTING = 3600.0
MAX_IMAGE_MB = 1024


class SettingsError(Exception):
    """A missing or malformed setting; the message is safe to print."""


@dataclass(frozen=True)
class Settings:
    """Everything the operator configures, parsed and range-checked.

    `load_settings` builds it once at start-up in the composition root (`bot/__main__.py`), from
    the environment and `.env`; tests build one directly. It is frozen and lives as long as the
    process: the composition root reads it to build the kie.ai client, the stores and the
    services, and the bot, its cogs, the web server and the logging set-up read what they need.
    Each field's variable, parser, range and meaning are declared in `SETTINGS` below; secrets
    are left out of `repr`.
    """

    discord_token: str = field(repr=False)
    kie_api_key: str = field(repr=False)
    kie_api_base: str = "https://api.kie.ai"
    kie_upload_base: str = "https://kieai.redpandaai.co"
    database_path: Path = Path("data/imagine.db")
    database_url: str | None = field(default=None, repr=False)  # None: SQLite at database_path
    lease_seconds: float = 30.0  # a dead process's jobs are taken over after this (PostgreSQL)
    shard_count: int | None = None  # None: one connection, no sharding
    shard_ids: tuple[int, ...] | None = None  # None: every shard, in this process
    history_days: int = 90  # prompts and links of older finished jobs are blanked (0: kept)
    daily_quota: int = 10
    max_running_per_member: int = 2  # 0: no limit
    max_running_per_server: int = 20  # 0: no limit
    low_credits_warning: float = 100.0  # 0: never
    cost_1k: int = 1  # not configurable: the unit everything else is counted in
    cost_2k: int = 2
    cost_pro_1k: int = 1
    cost_pro_2k: int = 1
    poll_interval: float = 2.0
    job_timeout: float = 600.0
    kie_breaker_failures: int = 5  # kie.ai outages in a row that open its circuit breaker
    kie_breaker_cooldown: float = 10.0  # before the first probe; doubles up to 5 minutes
    progress_min_interval: float = 2.0  # not configurable: tests shorten it
    max_image_bytes: int = 50 * 1024 * 1024
    download_timeout: float = 60.0
    request_timeout: float = 30.0  # not configurable: tests shorten it
    min_download: float = 15.0  # not configurable: tests shorten it
    redelivery_delay: float = 2.0  # not configurable: first wait while Discord is down
    dev_guild_id: int | None = None
    command_sync: str = "auto"
    log_level: str = "INFO"
    log_format: str = "text"
    public_base_url: str | None = None
    webhook_host: str = ""  # empty: all addresses with callbacks, else loopback only
    webhook_port: int = 8080  # 0: no web server
    kie_webhook_hmac_key: str | None = field(default=None, repr=False)
    callback_poll_interval: float = 15.0
    metrics_token: str | None = field(default=None, repr=False)
    metrics_host: str = "127.0.0.1"  # the separate metrics server's address (METRICS_PORT)
    metrics_port: int = 0  # 0: /metrics is on the web server
    trusted_download_hosts: frozenset[str] = frozenset()
    # The operator's controls for a public bot: ceilings no server setting can lift.
    max_member_daily: int = 50
    server_daily_cap: int = 500  # 0: no cap
    total_daily_cap: int = 0  # 0: no cap
    allowed_guild_ids: frozenset[int] = frozenset()  # empty: every server
    owner_guild_id: int | None = None  # None: no owner commands
    allow_nsfw: bool = False
    allow_dms: bool = False
    # Seals the servers' own kie.ai keys (`/server kie-key`); None: servers cannot set one.
    secret_key: str | None = field(default=None, repr=False)
    require_server_keys: bool = False  # KIE_API_KEY serves OWNER_GUILD_ID only
    ops_channel_id: int | None = None  # None: alerts go by DM to the owner(s)
    show_credits_to_servers: bool = False
    # Only for running against a local fake Discord (tests, benchmarks); unset in production.
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None


# Fields that no variable sets: fixed in production, changed only by tests building `Settings`.
NOT_FROM_ENVIRONMENT = frozenset(
    {"cost_1k", "progress_min_interval", "request_timeout", "min_download", "redelivery_delay"}
)


def bind_host(settings: Settings) -> str:
    """Where the web server listens: WEBHOOK_HOST, or by default every address when kie.ai
    must reach the callbacks and only loopback when it serves just the health check."""
    if settings.webhook_host:
        return settings.webhook_host
    return "0.0.0.0" if settings.public_base_url else "127.0.0.1"


def log_level_number(settings: Settings) -> int:
    return logging.getLevelNamesMapping()[settings.log_level]


# --- parsers: how a non-empty value is read, what it must be, and its range in the README -------
