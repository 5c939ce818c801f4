"""Project-level promises: the README's configuration table and `.env.example` are exactly what
the settings declaration in `bot/settings/declaration.py` renders, so a setting cannot be added,
renamed or re-described in one place only."""

from __future__ import annotations

import dataclasses
import difflib
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import (
    NOT_FROM_ENVIRONMENT,
    SETTINGS,
    Settings,
    load_settings,
)
from bot.settings.documents import render_env_example, render_markdown_table

ROOT = Path(__file__).resolve().parent.parent
TABLE_HEADER = "| Variable | Default | Meaning |"
REGENERATE = (
    "regenerate with `python -m bot.settings {flag}`, "
    "or fix SETTINGS in bot/settings/declaration.py"
)


def _readme_table() -> str:
    """The README's configuration table: from its header row to the first line not in it."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(TABLE_HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end]) + "\n"


def _differences(document: str, actual: str, rendered: str) -> str:
    return "".join(
        difflib.unified_diff(
            actual.splitlines(keepends=True),
            rendered.splitlines(keepends=True),
            fromfile=document,
            tofile="rendered from SETTINGS",
        )
    )


def test_readme_configuration_table_is_rendered_from_the_declaration() -> None:
    actual, rendered = _readme_table(), render_markdown_table()
    assert actual == rendered, f"{REGENERATE.format(flag='--markdown')}\n" + _differences(
        "README.md", actual, rendered
    )


def test_env_example_is_rendered_from_the_declaration() -> None:
    actual, rendered = (ROOT / ".env.example").read_text(), render_env_example()
    assert actual == rendered, f"{REGENERATE.format(flag='--env-example')}\n" + _differences(
        ".env.example", actual, rendered
    )


def test_every_settings_field_is_declared_exactly_once() -> None:
    names = [setting.name for setting in SETTINGS]
    declared = [setting.field for setting in SETTINGS]
    assert len(set(names)) == len(names), "a variable is declared twice"
    assert len(set(declared)) == len(declared), "a field is filled by two variables"
    fields = {item.name for item in dataclasses.fields(Settings)}
    assert set(declared) == fields - NOT_FROM_ENVIRONMENT
    assert fields >= NOT_FROM_ENVIRONMENT


def test_documented_defaults_read_back_as_the_real_defaults() -> None:
    for setting in SETTINGS:
        shown = setting.shown_default()
        if shown:
            assert setting.parser.read(shown) == setting.default, setting.name


def test_env_example_as_written_gives_the_default_settings() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    env.update(DISCORD_TOKEN="t", KIE_API_KEY="k")
    assert load_settings(env) == Settings(discord_token="t", kie_api_key="k")


def test_exactly_the_secret_settings_are_hidden_from_repr() -> None:
    hidden = {item.name for item in dataclasses.fields(Settings) if not item.repr}
    assert hidden == {setting.field for setting in SETTINGS if setting.secret}
    assert {"discord_token", "kie_api_key", "kie_webhook_hmac_key"} <= hidden
    # Each a value its parser takes (a database URL must look like one).
    env = {
        setting.name: ("postgresql://bot:" if setting.name == "DATABASE_URL" else "")
        + f"secret-{setting.name}"
        for setting in SETTINGS
        if setting.secret
    }
    text = repr(load_settings(env))
    for value in env.values():
        assert value.removeprefix("postgresql://bot:") not in text


def test_closed_choices_are_all_named_in_the_readme() -> None:
    for setting in SETTINGS:
        for choice in getattr(setting.parser, "choices", ()):
            assert f"`{choice}`" in setting.description, (setting.name, choice)


@pytest.mark.parametrize(
    ("flag", "rendered"),
    [("--markdown", render_markdown_table()), ("--env-example", render_env_example())],
)
def test_the_documents_can_be_regenerated_from_the_command_line(flag: str, rendered: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot.settings", flag],
        cwd=ROOT,  # `-m` puts the working directory first on the path
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == rendered
    assert result.stderr == ""


def test_every_package_of_the_bot_is_installed() -> None:
    """`pip install .` (the Dockerfile's) ships every subpackage, not only the top ones."""
    import tomllib

    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(str(ROOT), include=include))
    on_disk = {  # every folder of Python modules, with or without an __init__.py
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in ("bot", "cogs")
        for path in (ROOT / top).rglob("*.py")
    }
    assert on_disk <= shipped, sorted(on_disk - shipped)
    assert {"bot.kie", "bot.store", "bot.ui", "bot.settings"} <= shipped
