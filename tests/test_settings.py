"""Settings: defaults, validation, and the one-line error a bad setting gives at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.settings import SETTINGS, Setting, Settings, SettingsError, load_settings

SECRETS = {"DISCORD_TOKEN": "discord-secret-value", "KIE_API_KEY": "kie-secret-value"}


def test_defaults_apply_when_only_the_secrets_are_set() -> None:
    settings = load_settings(SECRETS)
    assert settings.kie_api_base == "https://api.kie.ai"
    assert settings.database_path == Path("data/imagine.db")
    assert settings.daily_quota == 10
    assert settings.cost_2k == 2
    assert settings.dev_guild_id is None


def test_secrets_never_appear_in_repr() -> None:
    text = repr(load_settings(SECRETS))
    assert "discord-secret-value" not in text
    assert "kie-secret-value" not in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DAILY_QUOTA", "ten"),
        ("DAILY_QUOTA", "0"),
        ("COST_2K", "-1"),
        ("POLL_INTERVAL_SECONDS", "soon"),
        ("JOB_TIMEOUT_SECONDS", "7200"),
        ("DEV_GUILD_ID", "my-server"),
        ("KIE_API_BASE", "api.kie.ai"),
        ("LOG_LEVEL", "loud"),
        ("COMMAND_SYNC", "sometimes"),
        ("MAX_IMAGE_MB", "1.5"),
        ("MAX_RUNNING_PER_MEMBER", "-1"),
        ("MAX_RUNNING_PER_SERVER", "lots"),
        ("LOW_CREDITS_WARNING", "-5"),
        ("KIE_UPLOAD_BASE", "kieai.redpandaai.co"),
    ],
)
def test_a_malformed_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**SECRETS, name: value})
    assert name in str(caught.value)


@pytest.mark.parametrize("missing", ["DISCORD_TOKEN", "KIE_API_KEY"])
def test_a_missing_secret_names_the_variable(missing: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        load_settings(env)


def test_values_are_parsed() -> None:
    settings = load_settings(
        {
            **SECRETS,
            "DAILY_QUOTA": "25",
            "DEV_GUILD_ID": "1234",
            "LOG_LEVEL": "debug",
            "MAX_RUNNING_PER_MEMBER": "0",
            "MAX_RUNNING_PER_SERVER": "5",
            "LOW_CREDITS_WARNING": "250.5",
            "KIE_UPLOAD_BASE": "http://files.example/",
        }
    )
    assert settings == Settings(
        discord_token="discord-secret-value",
        kie_api_key="kie-secret-value",
        daily_quota=25,
        dev_guild_id=1234,
        log_level="DEBUG",
        max_running_per_member=0,
        max_running_per_server=5,
        low_credits_warning=250.5,
        kie_upload_base="http://files.example",
    )


def test_the_operators_controls_are_parsed() -> None:
    settings = load_settings(
        {
            **SECRETS,
            "MAX_MEMBER_DAILY": "20",
            "SERVER_DAILY_CAP": "0",
            "TOTAL_DAILY_CAP": "900",
            "ALLOWED_GUILD_IDS": " 111, 222 ,",
            "OWNER_GUILD_ID": "333",
            "ALLOW_NSFW": "TRUE",
            "ALLOW_DMS": "yes",
            "OPS_CHANNEL_ID": "444",
            "SHOW_CREDITS_TO_SERVERS": "0",
        }
    )
    assert (settings.max_member_daily, settings.server_daily_cap) == (20, 0)
    assert settings.total_daily_cap == 900
    assert settings.allowed_guild_ids == frozenset({111, 222})
    assert (settings.owner_guild_id, settings.ops_channel_id) == (333, 444)
    assert settings.allow_nsfw and settings.allow_dms
    assert not settings.show_credits_to_servers


def test_a_public_bot_is_safe_by_default() -> None:
    settings = load_settings(SECRETS)
    assert (settings.max_member_daily, settings.server_daily_cap) == (50, 500)
    assert settings.total_daily_cap == 0
    assert settings.allowed_guild_ids == frozenset()
    assert settings.owner_guild_id is None and settings.ops_channel_id is None
    assert not (settings.allow_nsfw or settings.allow_dms or settings.show_credits_to_servers)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_MEMBER_DAILY", "0"),
        ("SERVER_DAILY_CAP", "-1"),
        ("ALLOWED_GUILD_IDS", "111,abc"),
        ("OWNER_GUILD_ID", "my-server"),
        ("ALLOW_NSFW", "maybe"),
        ("OPS_CHANNEL_ID", "#ops"),
    ],
)
def test_bad_operator_settings_are_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({**SECRETS, name: value})


def _run_bot(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DISCORD_TOKEN", "KIE_API_KEY"}}
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KIE_API_KEY": "kie-secret-value"}, "DISCORD_TOKEN"),
        ({**SECRETS, "DAILY_QUOTA": "lots"}, "DAILY_QUOTA"),
        ({**SECRETS, "KIE_API_BASE": "ftp://kie"}, "KIE_API_BASE"),
    ],
)
def test_bad_settings_stop_the_bot_with_one_plain_sentence(
    env: dict[str, str], named: str, tmp_path: Path
) -> None:
    result = _run_bot(env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr
    for secret in SECRETS.values():
        assert secret not in result.stderr + result.stdout


def test_settings_are_read_from_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=from-dotenv\nKIE_API_KEY=x\nDAILY_QUOTA=nope\n")
    result = _run_bot({}, tmp_path)
    assert result.returncode == 2
    assert "DAILY_QUOTA" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DAILY_QUOTA", "0", "DAILY_QUOTA must be a whole number from 1 to 1,000,000."),
        (
            "MAX_RUNNING_PER_SERVER",
            "1001",
            "MAX_RUNNING_PER_SERVER must be a whole number from 0 to 1,000.",
        ),
        ("MAX_IMAGE_MB", "1025", "MAX_IMAGE_MB must be a whole number from 1 to 1,024."),
        (
            "TOTAL_DAILY_CAP",
            "-1",
            "TOTAL_DAILY_CAP must be a whole number from 0 to 1,000,000,000.",
        ),
        (
            "LOW_CREDITS_WARNING",
            "nan",
            "LOW_CREDITS_WARNING must be a number of credits from 0 to 1,000,000,000.",
        ),
        (
            "JOB_TIMEOUT_SECONDS",
            "0",
            "JOB_TIMEOUT_SECONDS must be a number of seconds above 0 and at most 3600.",
        ),
        (
            "WEBHOOK_PORT",
            "65536",
            "WEBHOOK_PORT must be a port number from 1 to 65535, or 0 to turn the server off.",
        ),
        ("COMMAND_SYNC", "daily", "COMMAND_SYNC must be one of auto, always, never."),
        ("ALLOW_DMS", "sure", "ALLOW_DMS must be true or false."),
        ("OPS_CHANNEL_ID", "#ops", "OPS_CHANNEL_ID must be a Discord channel ID (digits only)."),
        (
            "PUBLIC_BASE_URL",
            "bot.example",
            "PUBLIC_BASE_URL must be a URL starting with http:// or https://.",
        ),
    ],
)
def test_a_refused_value_is_answered_with_the_allowed_range(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**SECRETS, name: value})
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.parser.limits], ids=lambda setting: setting.name
)
def test_every_ranged_setting_refuses_a_value_past_its_range(setting: Setting[Any]) -> None:
    with pytest.raises(SettingsError, match=setting.name):
        load_settings({**SECRETS, setting.name: str(10**12)})


def test_a_blank_secret_counts_as_not_set() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"DISCORD_TOKEN": "   ", "KIE_API_KEY": "kie-secret-value"})
    assert str(caught.value) == (
        "DISCORD_TOKEN is not set; add it to your environment or .env file."
    )


def test_a_value_is_read_without_surrounding_spaces() -> None:
    settings = load_settings({**SECRETS, "DATABASE_PATH": "  db/bot.db  ", "MAX_IMAGE_MB": " 2 "})
    assert settings.database_path == Path("db/bot.db")
    assert settings.max_image_bytes == 2 * 1024 * 1024
