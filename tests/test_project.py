"""Project-level promises: the README's configuration table matches `.env.example` and the code."""

from __future__ import annotations

import re
from pathlib import Path

from bot.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def _example_names() -> list[str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]


def _readme_names() -> list[str]:
    return re.findall(r"^\| `([A-Z0-9_]+)` \|", (ROOT / "README.md").read_text(), re.MULTILINE)


def test_readme_configuration_table_matches_env_example_line_for_line() -> None:
    assert _readme_names() == _example_names()


def test_every_documented_variable_is_read_by_the_settings() -> None:
    source = (ROOT / "bot" / "settings.py").read_text()
    for name in _example_names():
        assert f'"{name}"' in source, name


def test_env_example_defaults_are_valid_settings() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    env.update(DISCORD_TOKEN="t", KIE_API_KEY="k")
    settings = load_settings(env)
    assert settings.kie_api_base == "https://api.kie.ai"
    assert settings.daily_quota == 10
