"""Reading what the bot sent to the fake Discord: the final answer of an interaction, and more."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import FakeKie

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
        DATABASE_PATH=str(database),
        DISCORD_API_BASE=discord.api_base,
        DISCORD_GATEWAY_URL=discord.gateway_url,
    )
    env.update(settings)
    return env
