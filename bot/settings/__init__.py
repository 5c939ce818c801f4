"""Typed, validated settings read once from the environment.

Each setting is declared once, in `SETTINGS`: its variable, the `Settings` field it fills, its
parser and range, whether it is a secret, and the words the README's configuration table and
`.env.example` show for it. Its default is the `Settings` field's default. The loader reads that
declaration, `python -m bot.settings --markdown` and `--env-example` render the two documents
from it, and a test fails when either document drifts from it.

Every problem is reported as one plain sentence naming the variable, and never echoes the value
of a setting: operators paste these messages into chats and issue trackers.
"""

from bot.settings.declaration import SETTINGS, Setting, load_settings, read_one
from bot.settings.model import (
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_CAP_SETTING,
    MAX_IMAGE_MB,
    MAX_JOB_TIMEOUT,
    MAX_RUNNING_SETTING,
    MAX_SECONDS_SETTING,
    MAX_UNITS_SETTING,
    NOT_FROM_ENVIRONMENT,
    SYNC_MODES,
    Settings,
    SettingsError,
    bind_host,
    log_level_number,
)

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_CAP_SETTING",
    "MAX_IMAGE_MB",
    "MAX_JOB_TIMEOUT",
    "MAX_RUNNING_SETTING",
    "MAX_SECONDS_SETTING",
    "MAX_UNITS_SETTING",
    "NOT_FROM_ENVIRONMENT",
    "SETTINGS",
    "SYNC_MODES",
    "Setting",
    "Settings",
    "SettingsError",
    "bind_host",
    "load_settings",
    "log_level_number",
    "read_one",
]
