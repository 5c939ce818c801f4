"""Typed, validated settings read once from the environment.

Every problem is reported as one plain sentence naming the variable, and never echoes the value
of a secret: operators paste these messages into chats and issue trackers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SYNC_MODES = ("auto", "always", "never")
MAX_JOB_TIMEOUT = 3600.0


class SettingsError(Exception):
    """A missing or malformed setting; the message is safe to print."""


@dataclass(frozen=True)
class Settings:
    discord_token: str = field(repr=False)
    kie_api_key: str = field(repr=False)
    kie_api_base: str = "https://api.kie.ai"
    kie_upload_base: str = "https://kieai.redpandaai.co"  # kie.ai's file host, same key
    database_path: Path = Path("data/imagine.db")
    daily_quota: int = 10
    max_running_per_member: int = 2  # jobs at once; 0: no limit (servers may set their own)
    max_running_per_server: int = 20
    low_credits_warning: float = 100.0  # warn the owner below this kie.ai balance; 0: never
    cost_1k: int = 1
    cost_2k: int = 2
    poll_interval: float = 2.0
    job_timeout: float = 600.0
    progress_min_interval: float = 2.0
    max_image_bytes: int = 50 * 1024 * 1024
    download_timeout: float = 60.0
    request_timeout: float = 30.0
    dev_guild_id: int | None = None
    command_sync: str = "auto"
    log_level: str = "INFO"
    public_base_url: str | None = None
    webhook_host: str = ""  # empty: all addresses with callbacks, else loopback only
    webhook_port: int = 8080
    kie_webhook_hmac_key: str | None = field(default=None, repr=False)
    callback_poll_interval: float = 15.0
    # Hosts the bot may download from over http or on internal addresses (tests, local servers).
    trusted_download_hosts: frozenset[str] = frozenset()
    # The operator's controls for a public bot: ceilings no server setting can lift.
    max_member_daily: int = 50  # units per member per UTC day in one server (DMs: one more)
    server_daily_cap: int = 500  # units per server per UTC day; 0: no cap
    total_daily_cap: int = 0  # units per UTC day over everything; 0: no cap
    allowed_guild_ids: frozenset[int] = frozenset()  # empty: every server
    owner_guild_id: int | None = None  # where /owner is registered; None: no owner commands
    allow_nsfw: bool = False  # may servers turn kie.ai's filter off in age-restricted channels
    allow_dms: bool = False
    ops_channel_id: int | None = None  # operator alerts go here, else by DM to the owner(s)
    show_credits_to_servers: bool = False  # /server credits shows the account's balance
    # Only for running against a local fake Discord (tests, benchmarks); unset in production.
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None


def bind_host(settings: Settings) -> str:
    """Where the web server listens: WEBHOOK_HOST, or by default every address when kie.ai
    must reach the callbacks and only loopback when it serves just the health check."""
    if settings.webhook_host:
        return settings.webhook_host
    return "0.0.0.0" if settings.public_base_url else "127.0.0.1"


def _text(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise SettingsError(f"{name} is not set; add it to your environment or .env file.")
    return default


def _parsed(
    env: Mapping[str, str],
    name: str,
    default: T,
    parse: Callable[[str], T],
    check: Callable[[T], bool],
    expected: str,
) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {expected}.") from None
    if not check(value):
        raise SettingsError(f"{name} must be {expected}.")
    return value


def _url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.startswith(("http://", "https://", "ws://", "wss://")):
        raise SettingsError(f"{name} must be a URL starting with http:// or https://.")
    return raw.rstrip("/")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise SettingsError(f"{name} must be one of {', '.join(choices)}.")


# Upper bounds for numbers: far above any sensible value, far below what breaks arithmetic or
# SQLite's 64-bit integers. The README's configuration table gives each variable's range.
MAX_UNITS_SETTING = 1_000_000
MAX_CAP_SETTING = 1_000_000_000
MAX_RUNNING_SETTING = 1000
MAX_SECONDS_SETTING = 3600.0
MAX_IMAGE_MB = 1024


def _positive_int(env: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    return _parsed(
        env, name, default, int, lambda v: 0 < v <= maximum, f"a whole number from 1 to {maximum:,}"
    )


def _count(env: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    return _parsed(
        env,
        name,
        default,
        int,
        lambda v: 0 <= v <= maximum,
        f"a whole number from 0 to {maximum:,}",
    )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return _parsed(
        env,
        name,
        default,
        float,
        lambda v: 0 < v <= MAX_SECONDS_SETTING,
        f"a number of seconds above 0 and at most {MAX_SECONDS_SETTING:.0f}",
    )


def _snowflake(env: Mapping[str, str], name: str, what: str = "server") -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise SettingsError(f"{name} must be a Discord {what} ID (digits only).")
    return int(raw)


def _snowflakes(env: Mapping[str, str], name: str) -> frozenset[int]:
    parts = [part.strip() for part in env.get(name, "").split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise SettingsError(f"{name} must be Discord server IDs (digits) separated by commas.")
    return frozenset(int(part) for part in parts)


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false.")


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build `Settings` from environment variables, or raise `SettingsError`."""
    settings = _read(env)
    if settings.public_base_url and not settings.webhook_port:
        raise SettingsError("PUBLIC_BASE_URL needs WEBHOOK_PORT to be a port number, not 0.")
    return settings


def _read(env: Mapping[str, str]) -> Settings:
    return Settings(
        discord_token=_text(env, "DISCORD_TOKEN"),
        kie_api_key=_text(env, "KIE_API_KEY"),
        kie_api_base=_url(env, "KIE_API_BASE", Settings.kie_api_base) or Settings.kie_api_base,
        kie_upload_base=_url(env, "KIE_UPLOAD_BASE", Settings.kie_upload_base)
        or Settings.kie_upload_base,
        database_path=Path(_text(env, "DATABASE_PATH", str(Settings.database_path))),
        daily_quota=_positive_int(env, "DAILY_QUOTA", Settings.daily_quota, MAX_UNITS_SETTING),
        cost_2k=_positive_int(env, "COST_2K", Settings.cost_2k, 1000),
        max_running_per_member=_count(
            env, "MAX_RUNNING_PER_MEMBER", Settings.max_running_per_member, MAX_RUNNING_SETTING
        ),
        max_running_per_server=_count(
            env, "MAX_RUNNING_PER_SERVER", Settings.max_running_per_server, MAX_RUNNING_SETTING
        ),
        low_credits_warning=_parsed(
            env,
            "LOW_CREDITS_WARNING",
            Settings.low_credits_warning,
            float,
            lambda v: 0 <= v <= MAX_CAP_SETTING,
            f"a number of credits from 0 to {MAX_CAP_SETTING:,}",
        ),
        poll_interval=_seconds(env, "POLL_INTERVAL_SECONDS", Settings.poll_interval),
        # kie.ai suggests giving up after 10-15 minutes; an hour is the outer bound.
        job_timeout=_parsed(
            env,
            "JOB_TIMEOUT_SECONDS",
            Settings.job_timeout,
            float,
            lambda v: 0 < v <= MAX_JOB_TIMEOUT,
            f"a number of seconds above 0 and at most {MAX_JOB_TIMEOUT:.0f}",
        ),
        max_image_bytes=_positive_int(
            env, "MAX_IMAGE_MB", Settings.max_image_bytes // 2**20, MAX_IMAGE_MB
        )
        * 2**20,
        download_timeout=_seconds(env, "DOWNLOAD_TIMEOUT_SECONDS", Settings.download_timeout),
        dev_guild_id=_snowflake(env, "DEV_GUILD_ID"),
        command_sync=_choice(env, "COMMAND_SYNC", Settings.command_sync, SYNC_MODES),
        log_level=_choice(env, "LOG_LEVEL", Settings.log_level, LOG_LEVELS),
        public_base_url=_url(env, "PUBLIC_BASE_URL", None),
        webhook_host=_text(env, "WEBHOOK_HOST", Settings.webhook_host),
        webhook_port=_parsed(
            env,
            "WEBHOOK_PORT",
            Settings.webhook_port,
            int,
            lambda v: 0 <= v <= 65535,
            "a port number from 1 to 65535, or 0 to turn the server off",
        ),
        kie_webhook_hmac_key=env.get("KIE_WEBHOOK_HMAC_KEY", "").strip() or None,
        callback_poll_interval=_seconds(
            env, "CALLBACK_POLL_INTERVAL_SECONDS", Settings.callback_poll_interval
        ),
        trusted_download_hosts=frozenset(
            host.strip().lower()
            for host in env.get("TRUSTED_DOWNLOAD_HOSTS", "").split(",")
            if host.strip()
        ),
        max_member_daily=_positive_int(
            env, "MAX_MEMBER_DAILY", Settings.max_member_daily, MAX_UNITS_SETTING
        ),
        server_daily_cap=_count(
            env, "SERVER_DAILY_CAP", Settings.server_daily_cap, MAX_CAP_SETTING
        ),
        total_daily_cap=_count(env, "TOTAL_DAILY_CAP", Settings.total_daily_cap, MAX_CAP_SETTING),
        allowed_guild_ids=_snowflakes(env, "ALLOWED_GUILD_IDS"),
        owner_guild_id=_snowflake(env, "OWNER_GUILD_ID"),
        allow_nsfw=_flag(env, "ALLOW_NSFW", Settings.allow_nsfw),
        allow_dms=_flag(env, "ALLOW_DMS", Settings.allow_dms),
        ops_channel_id=_snowflake(env, "OPS_CHANNEL_ID", "channel"),
        show_credits_to_servers=_flag(
            env, "SHOW_CREDITS_TO_SERVERS", Settings.show_credits_to_servers
        ),
        discord_api_base=_url(env, "DISCORD_API_BASE", None),
        discord_gateway_url=_url(env, "DISCORD_GATEWAY_URL", None),
    )


def log_level_number(settings: Settings) -> int:
    return logging.getLevelNamesMapping()[settings.log_level]
