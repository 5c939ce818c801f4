"""The seams: only the Discord side may import discord.py, and only the store may hold SQL."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "bot"

# The Discord side: the bot class, what builds messages and views, and the entry point that
# wires everything together. Everything else in `bot/` is the core and must not know Discord.
DISCORD_SIDE = ("discord_bot.py", "ui/", "__main__.py")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _core_modules() -> list[Path]:
    modules = []
    for path in sorted(BOT.rglob("*.py")):
        relative = path.relative_to(BOT).as_posix()
        if not relative.startswith(DISCORD_SIDE):
            modules.append(path)
    return modules


def test_the_core_kie_and_store_never_import_discord() -> None:
    core = _core_modules()
    assert any(p.parent.name == "kie" for p in core)  # the packages are really scanned
    assert any(p.parent.name == "store" for p in core)
    offenders = {
        path.relative_to(ROOT).as_posix(): sorted(
            m for m in _imported_modules(path) if m == "discord" or m.startswith("discord.")
        )
        for path in core
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_kie_and_store_do_not_reach_into_the_discord_side() -> None:
    for package in ("kie", "store"):
        for path in (BOT / package).rglob("*.py"):
            imported = _imported_modules(path)
            assert not {m for m in imported if m.startswith(("bot.ui", "bot.discord_bot"))}, path


# SQL keywords as this project writes them (upper case), so prose like "Select a model" passes.
_SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)"
    r"|PRAGMA\s+\w+)\b",
    re.DOTALL,
)


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_no_sql_outside_the_store_package() -> None:
    holders = sorted(
        path.relative_to(ROOT).as_posix()
        for path in [*BOT.rglob("*.py"), *(ROOT / "cogs").rglob("*.py")]
        if "store" not in path.relative_to(BOT.parent).parts[:2]
        and any(_SQL.search(text) for text in _string_constants(path))
    )
    assert holders == []


def test_the_sql_detector_sees_sql() -> None:
    assert _SQL.search("SELECT id FROM jobs")
    assert _SQL.search("INSERT INTO jobs (a) VALUES (1)")
    assert _SQL.search("PRAGMA user_version")
    assert not _SQL.search("Select a model from the list")
