"""The use cases live in the core, the cogs only translate, and every text comes from bot/ui."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from bot.admin_events import AuditKind
from bot.domain import ChangeRefused, RefusedChange
from bot.ui import server_messages
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.helpers import ADMIN_PERMISSIONS, admin_command, embed_title, user_resolved

COGS = Path(__file__).resolve().parent.parent / "cogs"
MEMBER = 4242


def test_no_cog_imports_another_cog() -> None:
    """A use case two cogs share lives in the core; `cogs/common.py` holds only helpers."""
    for path in sorted(COGS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module is not None
        }
        cogs = {name for name in imported if name.startswith("cogs.")} - {"cogs.common"}
        assert not cogs, f"{path.name} imports {sorted(cogs)}"


@pytest.mark.parametrize("kind", list(AuditKind))
def test_every_audit_kind_has_a_title(kind: AuditKind) -> None:
    assert server_messages.audit_title(kind).strip()


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            ChangeRefused(RefusedChange.QUOTA_OVER_CEILING, limit=50, asked=60),
            "The bot's operator allows at most 50 units per member per day, so a quota of 60 "
            "can't be set. Nothing changed.",
        ),
        (
            ChangeRefused(RefusedChange.BUDGET_OVER_CAP, limit=2, asked=5),
            "The bot's operator caps this server at 2 units a day; its budget can be lower, "
            "not higher. Nothing changed.",
        ),
        (
            ChangeRefused(RefusedChange.GRANT_OVER_CEILING, limit=10, used=8, member_id=7),
            "The bot's operator allows at most 10 units per member per day, and <@7> already "
            "has 8 today: at most 2 more can be granted. Nothing changed.",
        ),
        (
            ChangeRefused(RefusedChange.SERVER_TERMS_FULL, limit=200),
            "A server can block at most 200 terms.",
        ),
        (
            ChangeRefused(RefusedChange.BOT_TERMS_FULL, limit=200),
            "The bot's blocklist holds at most 200 terms.",
        ),
        (ChangeRefused(RefusedChange.BAN_SELF), "You can't ban yourself."),
        (
            ChangeRefused(RefusedChange.TERM_TOO_LONG, limit=100),
            "A blocked term can be at most 100 characters long.",
        ),
        (
            ChangeRefused(RefusedChange.TERM_TOO_SHORT, limit=2),
            "A blocked term needs at least 2 letters or digits.",
        ),
    ],
)
def test_a_refused_change_says_why_in_words(error: ChangeRefused, text: str) -> None:
    assert server_messages.change_refused(error) == text


async def test_every_admin_change_is_posted_to_the_audit_channel(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot()
    audit = fake_discord.channel_id
    channel = {"id": str(audit), "type": 0, "name": "audit", "permissions": ADMIN_PERMISSIONS}
    await admin_command(
        fake_discord,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit)}},
        resolved={"channels": {str(audit): channel}},
    )
    role = await fake_discord.add_role("Patron")
    member: dict[str, Any] = {"member": {"type": 6, "value": str(MEMBER)}}
    changes: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = [
        ("server", "budget", {"units": 20}, None),
        ("server", "limits", {"per_member": 1}, None),
        ("server", "nsfw", {"spoiler": True}, None),
        (
            "server",
            "role-quota",
            {"role": {"type": 8, "value": str(role)}, "units": 3},
            fake_discord.resolved_roles(role),
        ),
        ("server", "reset", member, user_resolved(MEMBER)),
        ("moderation", "block", {"term": "lighthouse"}, None),
        ("moderation", "unblock", {"term": "lighthouse"}, None),
        ("moderation", "ban", member, user_resolved(MEMBER)),
        ("moderation", "unban", member, user_resolved(MEMBER)),
    ]
    for group, subcommand, options, resolved in changes:
        await admin_command(fake_discord, group, subcommand, options, resolved=resolved)
    await fake_discord.wait_for_request(
        lambda r: r.path == f"/channels/{audit}/messages" and embed_title(r) == "✅ Member unbanned"
    )
    posts = [
        embed_title(r)
        for r in fake_discord.requests
        if r.method == "POST" and r.path == f"/channels/{audit}/messages"
    ]
    assert posts == [
        "⚙️ Setting changed",
        "⚙️ Setting changed",
        "⚙️ Setting changed",
        "⚙️ Role quota changed",
        "🔄 Quota reset",
        "🚫 Term blocked",
        "✅ Term unblocked",
        "⛔ Member banned",
        "✅ Member unbanned",
    ]
