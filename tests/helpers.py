"""Reading what the bot sent to the fake Discord: the final answer of an interaction, and more."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord

from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import FakeKie, RecordedCall

ROOT = Path(__file__).resolve().parent.parent
READY_TITLE = "🖼️ Your image is ready"
FAILED_TITLE = "❌ No image this time"


def embed_title(request: RecordedRequest) -> str:
    embeds = (request.json or {}).get("embeds") or []
    return embeds[0].get("title", "") if embeds else ""


def embed_of(request: RecordedRequest) -> dict[str, Any]:
    return ((request.json or {}).get("embeds") or [{}])[0]


def field(request: RecordedRequest, name: str) -> str:
    for item in embed_of(request).get("fields", []):
        if item["name"] == name:
            return str(item["value"])
    raise AssertionError(f"no field {name!r} in {embed_of(request)}")


def is_original_edit(request: RecordedRequest, interaction: FakeInteraction) -> bool:
    return request.method == "PATCH" and request.path.endswith(
        f"/{interaction.token}/messages/@original"
    )


def is_final(request: RecordedRequest, interaction: FakeInteraction) -> bool:
    """The last word on an interaction: the image, a failure, or a private refusal."""
    if is_original_edit(request, interaction):
        return embed_title(request) in (READY_TITLE, FAILED_TITLE)
    if request.method == "POST" and request.path.endswith(
        f"/webhooks/{interaction.application_id}/{interaction.token}"
    ):
        return True
    if request.method == "POST" and request.path.endswith("/callback"):
        body = request.json or {}
        return str(interaction.id) in request.path and body.get("type") == 4
    return False


async def final_answer(
    fake: FakeDiscord, interaction: FakeInteraction, timeout: float = 15
) -> RecordedRequest:
    return await fake.wait_for_request(lambda r: is_final(r, interaction), timeout)


def original_edits(fake: FakeDiscord, interaction: FakeInteraction) -> list[RecordedRequest]:
    return [r for r in fake.calls_for(interaction) if is_original_edit(r, interaction)]


def bot_payloads(fake: FakeDiscord, interaction: FakeInteraction) -> list[dict[str, Any]]:
    """Every message body the bot sent for this interaction (responses, edits, follow-ups)."""
    payloads = []
    for request in fake.calls_for(interaction):
        body = request.json
        if not isinstance(body, dict):
            continue
        if request.path.endswith("/callback"):
            body = body.get("data")
            if not body:
                continue
        payloads.append(body)
    return payloads


def bot_environment(
    discord: FakeDiscord, kie: FakeKie, database: Path, **settings: str
) -> dict[str, str]:
    """What an operator would give `python -m bot`, pointed at the fakes.

    Every variable the bot reads is dropped from the inherited environment first, so only
    these apply, whatever the machine running the tests has set.
    """
    lines = (ROOT / ".env.example").read_text().splitlines()
    own = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    env = {key: value for key, value in os.environ.items() if key not in own}
    env.update(
        DISCORD_TOKEN=discord.token,
        KIE_API_KEY=kie.api_key,
        KIE_API_BASE=kie.base_url,
        KIE_UPLOAD_BASE=kie.upload_base_url,
        DATABASE_PATH=str(database),
        DISCORD_API_BASE=discord.api_base,
        DISCORD_GATEWAY_URL=discord.gateway_url,
    )
    env.update(settings)
    return env


async def bot_process(
    env: dict[str, str], cwd: Path, *, merged: bool = True
) -> asyncio.subprocess.Process:
    """`python -m bot` with `env`, its output piped (`merged`: stderr into stdout)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merged else asyncio.subprocess.PIPE,
    )


# --- admin commands -------------------------------------------------------------------------------

ADMIN = 9001
ADMIN_PERMISSIONS = str(discord.Permissions(manage_guild=True, view_channel=True).value)


def _option(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"name": name, **value}
    if isinstance(value, discord.Object):
        return {"name": name, "type": 6, "value": str(value.id)}
    if isinstance(value, bool):
        return {"name": name, "type": 5, "value": value}
    if isinstance(value, int):
        return {"name": name, "type": 4, "value": value}
    return {"name": name, "type": 3, "value": value}


async def admin_command(
    fake: FakeDiscord,
    group: str,
    subcommand: str,
    options: dict[str, Any] | None = None,
    *,
    user_id: int = ADMIN,
    permissions: str = ADMIN_PERMISSIONS,
    guild_id: int | None = None,
    resolved: dict[str, Any] | None = None,
    timeout: float = 15,
) -> RecordedRequest:
    """Run `/group subcommand` and return the bot's (private) answer."""
    raw = {"type": 1, "options": [_option(k, v) for k, v in (options or {}).items()]}
    extra = {"guild_id": guild_id} if guild_id is not None else {}
    interaction = await fake.send_interaction(
        group,
        {subcommand: raw},
        user_id=user_id,
        permissions=permissions,
        resolved=resolved,
        **extra,
    )
    return await final_answer(fake, interaction, timeout)


def history_options(subcommand: str = "list", **options: Any) -> dict[str, Any]:
    """The options of `/history <subcommand>` for `send_interaction("history", ...)`."""
    return {subcommand: {"type": 1, "options": [_option(k, v) for k, v in options.items()]}}


def is_private(answer: RecordedRequest) -> bool:
    """Whether an answer (a callback, a follow-up or an edit) is shown to its member only."""
    body = answer.json or {}
    flags = body.get("flags", (body.get("data") or {}).get("flags", 0)) or 0
    return bool(flags & 64)


def first_answer_is_private(fake: FakeDiscord, interaction: FakeInteraction) -> bool:
    """The interaction's first answer was a private message, not a public "thinking…"."""
    first = fake.calls_for(interaction)[0]
    return (first.json or {}).get("type") == 4 and is_private(first)


def answer_text(request: RecordedRequest) -> str:
    body = request.json or {}
    return str(body.get("content") or (body.get("data") or {}).get("content") or "")


def user_resolved(user_id: int) -> dict[str, Any]:
    user = {"id": str(user_id), "username": "someone", "discriminator": "0", "avatar": None}
    return {"users": {str(user_id): user}}


# --- waiting ----------------------------------------------------------------------------------

# Tasks through which an in-process bot is answering something right now: discord.py's event
# handlers, command and button dispatch, and the bot's refund, progress-edit and status-query
# tasks. A job waiting on kie.ai is not work in hand (it may wait for minutes by design), nor are
# long-lived loops (the poll scheduler, the rate limiter, discord.py's READY delay).
_WORK_IN_HAND = (
    "discord.py: ",
    "CommandTree-invoker",
    "discord-ui-view-dispatch-",
    "discord-ui-modal-",
    "refund-",
    "progress-",
    "kie-status-query",
)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 5, *, what: str = ""
) -> None:
    """Wait until `check()` holds (it may be sync or async), checking every 10 ms.

    The one polling loop of the suite, for state that has no event to wait on: a database row, a
    counter, a subprocess. On timeout raises `TimeoutError` naming `what` (or the check).
    """
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        name = what or getattr(check, "__qualname__", repr(check))
        raise TimeoutError(f"still waiting after {timeout}s for {name}") from None


def _work_in_hand() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [
        task
        for task in asyncio.all_tasks()
        if task is not current and not task.done() and task.get_name().startswith(_WORK_IN_HAND)
    ]


async def bot_is_idle(timeout: float = 10) -> None:
    """Wait until the in-process bot is answering nothing: no event handler, command, button,
    refund, progress edit or status query left running (see `_WORK_IN_HAND`)."""
    await eventually(lambda: not _work_in_hand(), timeout, what="the bot to finish answering")


Received = RecordedRequest | RecordedCall


async def nothing_else_happens(
    *fakes: FakeDiscord | FakeKie,
    within: float = 0.1,
    where: Callable[[Received], bool] = lambda request: True,
) -> None:
    """Assert that the bot sends no further request (matching `where`) to any of `fakes`.

    Notes what each fake has received, waits until the in-process bot is answering nothing
    (`bot_is_idle`), then `within` seconds more for anything already on its way, and fails
    listing every matching request that arrived meanwhile. For a bot in a subprocess, whose
    tasks cannot be seen, `within` is the whole window: give it what a late answer would need.
    """
    seen = [len(_received(fake)) for fake in fakes]
    await bot_is_idle()
    await asyncio.sleep(within)
    late = [
        f"{type(fake).__name__}: {r.method} {r.path}"
        for fake, count in zip(fakes, seen, strict=True)
        for r in _received(fake)[count:]
        if where(r)
    ]
    assert not late, "nothing else should have happened, but:\n  " + "\n  ".join(late)


def _received(fake: FakeDiscord | FakeKie) -> list[Any]:
    return fake.requests if isinstance(fake, FakeDiscord) else fake.calls
