"""compose.yaml, the deployment to copy: PostgreSQL pinned, on a volume, checked with pg_isready;
two bots built from the Dockerfile that wait for it to be healthy, check themselves as the
Dockerfile does, restart, and stop gracefully. No YAML library is installed (nor worth adding
for one file), so a reader of the block-style subset the file keeps to is here; it refuses
anything else (anchors, multi-line scalars), so the file stays plain enough to read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bot.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
BOTS = ("bot-1", "bot-2")


def _scalar(text: str) -> Any:
    if text.startswith("["):
        return json.loads(text)  # a flow list of double-quoted strings
    if text.startswith('"'):
        return json.loads(text)
    if re.search(r"[&*|>{]", text[:1]):
        raise ValueError(f"outside the plain subset: {text!r}")
    return text


def _strip(line: str) -> str:
    # A comment starts at " #" outside double quotes.
    quoted = False
    for i, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted and (i == 0 or line[i - 1] == " "):
            return line[:i].rstrip()
    return line.rstrip()


def load(text: str) -> dict[str, Any]:
    """Block mappings and lists of scalars, flow lists, double-quoted or plain scalars."""
    lines = [(len(s) - len(s.lstrip()), s.strip()) for s in map(_strip, text.splitlines()) if s]
    root: dict[str, Any] = {}
    stack: list[tuple[int, Any]] = [(-1, root)]
    for index, (indent, line) in enumerate(lines):
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if line.startswith("- "):
            assert isinstance(parent, list), f"a list item outside a list: {line!r}"
            parent.append(_scalar(line[2:].strip()))
            continue
        key, _, rest = line.partition(":")
        assert isinstance(parent, dict) and key and (not rest or rest[0] == " "), line
        rest = rest.strip()
        if rest:
            parent[key] = _scalar(rest)
            continue
        deeper = index + 1 < len(lines) and lines[index + 1][0] > indent
        child: Any = ([] if lines[index + 1][1].startswith("- ") else {}) if deeper else None
        parent[key] = child
        if child is not None:
            stack.append((indent, child))
    return root


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE.read_text())


def test_the_reader_reads_what_it_claims() -> None:
    text = 'a:\n  b: "x # y"  # note\n  c: [1, 2]\n  d:\n    - e\n    - "f"\n  g:\n'
    assert load(text) == {"a": {"b": "x # y", "c": [1, 2], "d": ["e", "f"], "g": None}}
    with pytest.raises(ValueError, match="plain subset"):
        load("a: &anchor\n")


def test_postgres_is_pinned_on_a_volume_and_checked_with_pg_isready(
    compose: dict[str, Any],
) -> None:
    db = compose["services"]["db"]
    assert re.fullmatch(r"postgres:\d+\.\d+-\w+", db["image"]), "a version tag, not latest"
    assert int(db["image"].split(":")[1].split(".")[0]) >= 13  # README: PostgreSQL 13 or newer
    (volume,) = db["volumes"]
    name, _, path = volume.partition(":")
    assert path == "/var/lib/postgresql/data" and name in compose["volumes"]
    assert db["healthcheck"]["test"][0] == "CMD-SHELL"
    assert db["healthcheck"]["test"][1].startswith("pg_isready ")
    assert "ports" not in db, "the database is reached on the compose network only"


def test_each_bot_waits_for_a_healthy_database_and_checks_itself_like_the_dockerfile(
    compose: dict[str, Any],
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "bot.healthcheck"]' in dockerfile
    for name in BOTS:
        bot = compose["services"][name]
        assert bot["build"] == "." and bot["env_file"] == ".env"
        assert bot["depends_on"] == {"db": {"condition": "service_healthy"}}
        assert bot["healthcheck"]["test"] == ["CMD", "python", "-m", "bot.healthcheck"]
        assert bot["restart"] in ("unless-stopped", "always")
        assert bot["stop_grace_period"] == "30s"
        url = bot["environment"]["DATABASE_URL"]
        assert url.startswith("postgresql://imagine:${POSTGRES_PASSWORD") and "@db:5432/" in url
        for volume in bot["volumes"]:
            assert volume.split(":")[0] in compose["volumes"]
    shards = [compose["services"][name]["environment"]["SHARD_IDS"] for name in BOTS]
    assert shards == ["0", "1"]


def test_only_the_first_bot_publishes_the_callback_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["bot-1"]["ports"] == ["8080:8080"]
    assert "ports" not in services["bot-2"]
    # Both processes start with `docker compose up`: neither is behind a profile.
    assert "profiles" not in services["bot-1"] and "profiles" not in services["bot-2"]


def test_settings_the_bot_does_not_know_yet_are_the_shard_ones_only(
    compose: dict[str, Any],
) -> None:
    # The bot ignores variables it does not declare, so these are harmless until it does.
    known = {setting.name for setting in SETTINGS}
    for name in BOTS:
        unknown = set(compose["services"][name]["environment"]) - known
        assert unknown <= {"SHARD_COUNT", "SHARD_IDS"}
