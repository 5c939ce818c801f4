"""The README's configuration table and `.env.example`, rendered from the declaration."""

from __future__ import annotations

from typing import Any

from bot.settings.declaration import SETTINGS, Setting

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
