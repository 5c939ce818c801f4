"""Reading what the bot sent to the fake Discord: the final answer of an interaction, and more."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest

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
