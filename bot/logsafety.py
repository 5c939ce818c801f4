"""Logging that stays useful at DEBUG and never shows a secret.

Two layers. The libraries that log request URLs, gateway payloads or SQL parameters at DEBUG
(interaction tokens live in webhook URLs, callback secrets in the jobs table) are held at INFO
whatever `LOG_LEVEL` says. And every line, exception text included, passes a filter that blanks
the configured secrets and anything shaped like an interaction token, a callback path's secret
or an Authorization header, in case some other line carries one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from bot.settings import SETTINGS, Settings, log_level_number

LOG_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
# Their DEBUG lines carry request URLs with interaction tokens, gateway payloads and SQL with
# its parameters.
CHATTY_LOGGERS = (
    "discord.http",
    "discord.gateway",
    "discord.webhook",
    "discord.client",
    "aiosqlite",
)
REDACTED = "[redacted]"
# (pattern, replacement): what is kept of the match, and the blank.
_SHAPES = (
    # Interaction tokens are base64 of "interaction:…".
    (re.compile(r"aW50ZXJhY3Rpb24[0-9A-Za-z_\-.=]+"), REDACTED),
    # The per-job secret of a callback URL.
    (re.compile(r"(/kie/callback/\d+/)[^/\s\"'?]+"), rf"\1{REDACTED}"),
    (
        re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer |bot )?)[^\s'\",}]+"),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)(bearer )[^\s'\",}]+"), rf"\1{REDACTED}"),
)


# Secrets learnt while running (servers' own kie.ai keys): blanked like the configured ones.
# Kept longest first, sorted when one is added, not on every log line.
_RUNTIME_SECRETS: tuple[str, ...] = ()


def add_secret(secret: str) -> None:
    """Blank `secret` from every log line from now on (a server's kie.ai key)."""
    global _RUNTIME_SECRETS
    if len(secret) >= 6 and secret not in _RUNTIME_SECRETS:
        _RUNTIME_SECRETS = tuple(sorted((*_RUNTIME_SECRETS, secret), key=len, reverse=True))


def forget_secret(secret: str) -> None:
    """Stop blanking a key nothing uses any more (one kie.ai refused): keys tried and refused
    must not grow the list every log line is checked against."""
    global _RUNTIME_SECRETS
    _RUNTIME_SECRETS = tuple(known for known in _RUNTIME_SECRETS if known != secret)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in (*secrets, *_RUNTIME_SECRETS):
        text = text.replace(secret, REDACTED)
    for shape, blank in _SHAPES:
        text = shape.sub(blank, text)
    return text


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret containing another is blanked whole.
        self._secrets = sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self._secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True


# Context a line may carry (`log.info(..., extra={"job_id": 42})`), copied into JSON lines:
# the ids of a job's line, its outcome and figures (`bot/outcomes.py`), and who did what in a
# refusal or an admin change. Ids, kinds and numbers only: never a prompt.
CONTEXT_FIELDS = (
    "job_id",
    "guild_id",
    "user_id",
    "task_id",
    "outcome",
    "failure",
    "wait_seconds",
    "generation_seconds",
    "delivery_seconds",
    "units",
    "model",
    "reason",
    "actor_id",
    "change",
)
_FIELD_LIMIT = 200  # characters of one context value: ids and kinds, never a payload


class JsonFormatter(logging.Formatter):
    """`LOG_FORMAT=json`: one JSON object per line, for log pipelines. It formats what the
    redacting filter left: the message and exception text are already blanked."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                keep = isinstance(value, int | float) and not isinstance(value, bool)
                line[name] = value if keep else str(value)[:_FIELD_LIMIT]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False)


def formatter_for(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if settings.log_format == "json" else logging.Formatter(LOG_FORMAT)


def configure_logging(settings: Settings) -> None:
    level = log_level_number(settings)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter_for(settings))
    # Every setting the declaration marks secret, so a new secret setting is redacted too.
    secrets = [str(getattr(settings, s.field) or "") for s in SETTINGS if s.secret]
    handler.addFilter(RedactingFilter(secrets))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
