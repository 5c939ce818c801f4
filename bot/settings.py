"""Typed, validated settings read once from the environment.

Each setting is declared once, in `SETTINGS`: its variable, the `Settings` field it fills, its
parser and range, whether it is a secret, and the words the README's configuration table and
`.env.example` show for it. Its default is the `Settings` field's default. The loader reads that
declaration, `python -m bot.settings --markdown` and `--env-example` render the two documents
from it, and a test fails when either document drifts from it.

Every problem is reported as one plain sentence naming the variable, and never echoes the value
of a setting: operators paste these messages into chats and issue trackers.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SYNC_MODES = ("auto", "always", "never")
# kie.ai suggests giving up after 10-15 minutes; an hour is the outer bound.
MAX_JOB_TIMEOUT = 3600.0

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
    daily_quota: int = 10
    max_running_per_member: int = 2  # 0: no limit
    max_running_per_server: int = 20  # 0: no limit
    low_credits_warning: float = 100.0  # 0: never
    cost_1k: int = 1  # not configurable: the unit everything else is counted in
    cost_2k: int = 2
    poll_interval: float = 2.0
    job_timeout: float = 600.0
    progress_min_interval: float = 2.0  # not configurable: tests shorten it
    max_image_bytes: int = 50 * 1024 * 1024
    download_timeout: float = 60.0
    request_timeout: float = 30.0  # not configurable: tests shorten it
    dev_guild_id: int | None = None
    command_sync: str = "auto"
    log_level: str = "INFO"
    public_base_url: str | None = None
    webhook_host: str = ""  # empty: all addresses with callbacks, else loopback only
    webhook_port: int = 8080  # 0: no web server
    kie_webhook_hmac_key: str | None = field(default=None, repr=False)
    callback_poll_interval: float = 15.0
    trusted_download_hosts: frozenset[str] = frozenset()
    # The operator's controls for a public bot: ceilings no server setting can lift.
    max_member_daily: int = 50
    server_daily_cap: int = 500  # 0: no cap
    total_daily_cap: int = 0  # 0: no cap
    allowed_guild_ids: frozenset[int] = frozenset()  # empty: every server
    owner_guild_id: int | None = None  # None: no owner commands
    allow_nsfw: bool = False
    allow_dms: bool = False
    ops_channel_id: int | None = None  # None: alerts go by DM to the owner(s)
    show_credits_to_servers: bool = False
    # Only for running against a local fake Discord (tests, benchmarks); unset in production.
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None


# Fields that no variable sets: fixed in production, changed only by tests building `Settings`.
NOT_FROM_ENVIRONMENT = frozenset({"cost_1k", "progress_min_interval", "request_timeout"})


def bind_host(settings: Settings) -> str:
    """Where the web server listens: WEBHOOK_HOST, or by default every address when kie.ai
    must reach the callbacks and only loopback when it serves just the health check."""
    if settings.webhook_host:
        return settings.webhook_host
    return "0.0.0.0" if settings.public_base_url else "127.0.0.1"


def log_level_number(settings: Settings) -> int:
    return logging.getLevelNamesMapping()[settings.log_level]


# --- parsers: how a non-empty value is read, what it must be, and its range in the README -------


class Parser(Protocol[T]):
    """Reads one stripped, non-empty value or raises `ValueError`."""

    @property
    def expected(self) -> str:
        """Ends the sentence "NAME must be …" when a value is refused."""
        ...

    @property
    def limits(self) -> str:
        """The range as the README's table states it after the meaning; empty: none to state."""
        ...

    def read(self, raw: str) -> T: ...

    def show(self, value: T) -> str:
        """A value as it is written in `.env` (for showing defaults)."""
        ...


@dataclass(frozen=True)
class Text:
    expected: str = "some text"
    limits: str = ""

    def read(self, raw: str) -> str:
        return raw

    def show(self, value: str) -> str:
        return value


@dataclass(frozen=True)
class FilePath:
    expected: str = "a file path"
    limits: str = ""

    def read(self, raw: str) -> Path:
        return Path(raw)

    def show(self, value: Path) -> str:
        return str(value)


@dataclass(frozen=True)
class Url:
    expected: str = "a URL starting with http:// or https://"
    limits: str = ""

    def read(self, raw: str) -> str:
        if not raw.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError(raw)
        return raw.rstrip("/")

    def show(self, value: str) -> str:
        return value


@dataclass(frozen=True)
class Whole:
    """A whole number from `minimum` to `maximum`, stored multiplied by `scale`."""

    minimum: int
    maximum: int
    scale: int = 1

    @property
    def expected(self) -> str:
        return f"a whole number from {self.minimum} to {self.maximum:,}"

    @property
    def limits(self) -> str:
        return f"{self.minimum} to {self.maximum:,}."

    def read(self, raw: str) -> int:
        value = int(raw)
        if not self.minimum <= value <= self.maximum:
            raise ValueError(raw)
        return value * self.scale

    def show(self, value: int) -> str:
        return str(value // self.scale)


@dataclass(frozen=True)
class Amount:
    """A number of `unit`, fractions allowed, from `minimum` to `maximum`."""

    unit: str
    minimum: int
    maximum: int

    @property
    def expected(self) -> str:
        return f"a number of {self.unit} from {self.minimum} to {self.maximum:,}"

    @property
    def limits(self) -> str:
        return f"{self.minimum} to {self.maximum:,}."

    def read(self, raw: str) -> float:
        value = float(raw)
        if not self.minimum <= value <= self.maximum:  # also refuses nan
            raise ValueError(raw)
        return value

    def show(self, value: float) -> str:
        return f"{value:g}"


@dataclass(frozen=True)
class Seconds:
    maximum: float = MAX_SECONDS_SETTING

    @property
    def expected(self) -> str:
        return f"a number of seconds above 0 and at most {self.maximum:.0f}"

    @property
    def limits(self) -> str:
        return f"Above 0, at most {self.maximum:.0f}."

    def read(self, raw: str) -> float:
        value = float(raw)
        if not 0 < value <= self.maximum:  # also refuses nan
            raise ValueError(raw)
        return value

    def show(self, value: float) -> str:
        return f"{value:g}"


@dataclass(frozen=True)
class Port:
    expected: str = "a port number from 1 to 65535, or 0 to turn the server off"
    limits: str = "0 to 65535."

    def read(self, raw: str) -> int:
        value = int(raw)
        if not 0 <= value <= 65535:
            raise ValueError(raw)
        return value

    def show(self, value: int) -> str:
        return str(value)


@dataclass(frozen=True)
class Choice:
    """One of `choices`, in any case; the meaning in the README names them."""

    choices: tuple[str, ...]
    limits: str = ""

    @property
    def expected(self) -> str:
        return f"one of {', '.join(self.choices)}"

    def read(self, raw: str) -> str:
        for choice in self.choices:
            if raw.lower() == choice.lower():
                return choice
        raise ValueError(raw)

    def show(self, value: str) -> str:
        return value


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class Flag:
    expected: str = "true or false"
    limits: str = ""

    def read(self, raw: str) -> bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(raw)

    def show(self, value: bool) -> str:
        return "true" if value else "false"


@dataclass(frozen=True)
class Snowflake:
    """A Discord ID of a `what` (server, channel)."""

    what: str = "server"
    limits: str = ""

    @property
    def expected(self) -> str:
        return f"a Discord {self.what} ID (digits only)"

    def read(self, raw: str) -> int:
        if not raw.isdigit():
            raise ValueError(raw)
        return int(raw)

    def show(self, value: int) -> str:
        return str(value)


@dataclass(frozen=True)
class Snowflakes:
    expected: str = "Discord server IDs (digits) separated by commas"
    limits: str = ""

    def read(self, raw: str) -> frozenset[int]:
        parts = [part.strip() for part in raw.split(",") if part.strip()]
        if not all(part.isdigit() for part in parts):
            raise ValueError(raw)
        return frozenset(int(part) for part in parts)

    def show(self, value: frozenset[int]) -> str:
        return ",".join(str(part) for part in sorted(value))


@dataclass(frozen=True)
class Hosts:
    expected: str = "host names separated by commas"
    limits: str = ""

    def read(self, raw: str) -> frozenset[str]:
        return frozenset(host.strip().lower() for host in raw.split(",") if host.strip())

    def show(self, value: frozenset[str]) -> str:
        return ",".join(sorted(value))


# --- the declaration --------------------------------------------------------------------------


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


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build `Settings` from environment variables, or raise `SettingsError`."""
    values: dict[str, Any] = {setting.field: setting.read(env) for setting in SETTINGS}
    settings = Settings(**values)
    if settings.public_base_url and not settings.webhook_port:
        raise SettingsError("PUBLIC_BASE_URL needs WEBHOOK_PORT to be a port number, not 0.")
    return settings


# --- the documents rendered from the declaration ------------------------------------------------

MARKDOWN_HEADER = "| Variable | Default | Meaning |\n| --- | --- | --- |\n"


def markdown_row(setting: Setting[Any]) -> str:
    if setting.required:
        default = "(required)"
    else:
        shown = setting.shown_default()
        default = f"`{shown}`" if shown else "(empty)"
    meaning = " ".join(part for part in (setting.description, setting.parser.limits) if part)
    return f"| `{setting.name}` | {default} | {meaning} |"


def render_markdown_table() -> str:
    """The README's configuration table."""
    return MARKDOWN_HEADER + "".join(markdown_row(setting) + "\n" for setting in SETTINGS)


def render_env_example() -> str:
    """The whole of `.env.example`."""
    lines: list[str] = []
    for setting in SETTINGS:
        lines.extend(f"# {text}" for text in (setting.heading, setting.comment) if text)
        lines.append(f"{setting.name}={setting.shown_default()}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bot.settings --markdown | --env-example`: print a document to paste."""
    parser = argparse.ArgumentParser(
        prog="python -m bot.settings",
        description="Print the configuration documents rendered from bot/settings.py.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--markdown", action="store_true", help="the README's configuration table")
    which.add_argument("--env-example", action="store_true", help="the contents of .env.example")
    args = parser.parse_args(argv)
    sys.stdout.write(render_markdown_table() if args.markdown else render_env_example())
    return 0


if __name__ == "__main__":
    sys.exit(main())
