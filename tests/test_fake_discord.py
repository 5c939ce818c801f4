"""Self-test of the fake Discord: a real discord.py bot logs in, syncs, answers /ping."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest

pytestmark = pytest.mark.timeout(30)

PNG_BYTES = b"x" * 100


class PingBot(commands.Bot):
    """The smallest bot that exercises defer + edit-with-file, like /imagine does."""

    def __init__(self) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())

        @self.tree.command(name="ping", description="Answers pong with a file")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await interaction.edit_original_response(
                content="pong", attachments=[discord.File(io.BytesIO(PNG_BYTES), "a.png")]
            )

        @self.tree.command(name="echo", description="Echoes its options")
        @app_commands.describe(text="what to say", times="how often")
        async def echo(interaction: discord.Interaction, text: str, times: int = 1) -> None:
            await interaction.response.send_message(text * times, ephemeral=True)

        @self.tree.command(name="notify", description="Followups, a DM and a channel message")
        async def notify(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True)
            await interaction.followup.send("first")  # completes the deferred message
            await interaction.followup.send("second", file=discord.File(io.BytesIO(b"z"), "z.txt"))
            await interaction.user.send("dm")
            if interaction.channel is not None and interaction.guild is not None:
                await interaction.channel.send("channel", embed=discord.Embed(title="t"))

    async def setup_hook(self) -> None:
        await self.tree.sync()


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url)
    )
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[PingBot]:
    client = PingBot()
    task = asyncio.create_task(client.start(fake.token))
    try:
        await fake.wait_until_ready()
        yield client
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


def _is_original_patch(interaction: FakeInteraction, status: int = 200):
    def predicate(rec: RecordedRequest) -> bool:
        return (
            rec.method == "PATCH"
            and rec.path.endswith(f"/{interaction.token}/messages/@original")
            and rec.status == status
        )

    return predicate


async def test_ping_defers_then_edits_with_a_file(fake: FakeDiscord, bot: PingBot) -> None:
    assert fake.command_puts == 1
    assert {c["name"] for c in fake.synced_commands[None]} == {"ping", "echo", "notify"}

    interaction = await fake.send_interaction("ping")
    patch = await fake.wait_for_request(_is_original_patch(interaction))

    callback, edit = fake.calls_for(interaction)
    assert callback.method == "POST"
    assert callback.path == f"/interactions/{interaction.id}/{interaction.token}/callback"
    assert callback.json == {"type": 5}
    assert callback.status == 200
    assert "authorization" not in callback.headers
    assert edit is patch
    assert patch.json["content"] == "pong"
    assert patch.json["attachments"] == [{"id": 0, "filename": "a.png"}]
    assert [(f.field_name, f.filename, f.data) for f in patch.files] == [
        ("files[0]", "a.png", PNG_BYTES)
    ]
    assert "authorization" not in patch.headers

    original = fake.original_message(interaction)
    assert original is not None
    assert original["content"] == "pong"
    assert original["flags"] == 0  # loading flag cleared by the edit
    assert [(a["filename"], a["size"]) for a in original["attachments"]] == [("a.png", 100)]
    assert fake.attachment_bytes(original["attachments"][0]["id"]) == PNG_BYTES
    assert fake.followups(interaction) == []
    assert fake.ack_latency(interaction) is not None

    # Bot-authenticated calls carry the token.
    me = next(r for r in fake.requests if r.path == "/users/@me")
    assert me.headers["authorization"] == "Bot fake-bot-token"


async def test_options_reach_the_command(fake: FakeDiscord, bot: PingBot) -> None:
    interaction = await fake.send_interaction("echo", {"text": "hi", "times": 3})
    callback = await fake.wait_for_request(lambda r: r.path.endswith("/callback"))
    assert callback.json["type"] == 4
    assert callback.json["data"]["content"] == "hihihi"
    assert callback.json["data"]["flags"] == 64
    original = fake.original_message(interaction)
    assert original is not None and original["flags"] & 64


async def test_followups_dm_and_channel_message(fake: FakeDiscord, bot: PingBot) -> None:
    interaction = await fake.send_interaction("notify", user_id=42, username="alice")
    await fake.wait_for_request(
        lambda r: r.method == "POST" and r.path == f"/channels/{fake.channel_id}/messages"
    )
    original = fake.original_message(interaction)
    assert original is not None
    assert (original["content"], original["flags"]) == ("first", 64)
    [second] = fake.followups(interaction)
    assert second["content"] == "second"
    assert [a["filename"] for a in second["attachments"]] == ["z.txt"]
    dm_channel = fake.dm_channel_id(42)
    assert [m["content"] for m in fake.channel_messages[dm_channel]] == ["dm"]
    [posted] = fake.channel_messages[fake.channel_id]
    assert posted["embeds"][0]["title"] == "t"
    create_dm = next(r for r in fake.requests if r.path == "/users/@me/channels")
    assert create_dm.json == {"recipient_id": 42}

    # The same command from a DM: no guild, channel is the user's DM channel.
    dm_interaction = await fake.send_interaction("notify", user_id=42, guild_id=None)
    await fake.wait_for_request(
        lambda r: (
            r.method == "POST"
            and r.path == f"/channels/{dm_channel}/messages"
            and len(fake.channel_messages[dm_channel]) == 2
        )
    )
    assert dm_interaction.channel_id == dm_channel
    assert len(fake.followups(dm_interaction)) == 1


async def test_bot_resumes_after_gateway_drop(fake: FakeDiscord, bot: PingBot) -> None:
    await fake.drop_gateway()
    # Sent while the client is away: must be replayed on RESUME.
    interaction = await fake.send_interaction("ping")
    await fake.wait_until_resumed()
    await fake.wait_for_request(_is_original_patch(interaction))
    assert fake.resume_count == 1
    assert fake.identify_count == 1
    resume = next(f for f in fake.gateway_received if f["op"] == 6)
    assert resume["d"]["token"] == fake.token


async def test_rate_limited_patch_is_retried(fake: FakeDiscord, bot: PingBot) -> None:
    fake.rate_limit_next("PATCH", "/messages/@original", retry_after=0.05)
    interaction = await fake.send_interaction("ping")
    await fake.wait_for_request(_is_original_patch(interaction))
    patches = [r for r in fake.calls_for(interaction) if r.method == "PATCH"]
    assert [p.status for p in patches] == [429, 200]
    assert patches[1].at - patches[0].at >= 0.05
    assert patches[0].files[0].data == patches[1].files[0].data == PNG_BYTES
    assert fake.rate_limited_responses == 1


async def test_restart_identifies_again_without_resyncing(fake: FakeDiscord) -> None:
    syncing = PingBot()
    task = asyncio.create_task(syncing.start(fake.token))
    await fake.wait_until_ready()
    await syncing.close()
    await asyncio.wait_for(task, 5)

    # A restarted bot that does not sync leaves command_puts alone.
    client = commands.Bot(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
    task = asyncio.create_task(client.start(fake.token))
    try:
        await fake.wait_until_ready()
        assert fake.identify_count == 2
        assert fake.command_puts == 1
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


# --------------------------------------------------------------------------- raw wire checks


async def _raw_gateway_client(
    fake: FakeDiscord, session: aiohttp.ClientSession
) -> tuple[aiohttp.ClientWebSocketResponse, dict]:
    ws = await session.ws_connect(fake.gateway_url + "?v=10&encoding=json")
    hello = await ws.receive_json()
    assert hello["op"] == 10
    await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 1, "properties": {}}})
    ready = await ws.receive_json()
    guild = await ws.receive_json()
    assert (ready["t"], ready["s"], guild["t"], guild["s"]) == ("READY", 1, "GUILD_CREATE", 2)
    return ws, ready["d"]


async def test_raw_wire_rules(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        ws, ready = await _raw_gateway_client(fake, http)
        assert ready["resume_gateway_url"] == fake.gateway_url
        await fake.wait_until_ready()

        interaction = await fake.send_interaction("imagine", {"prompt": "a cat", "hd": True})
        event = await ws.receive_json()
        assert (event["t"], event["s"]) == ("INTERACTION_CREATE", 3)
        data = event["d"]
        assert data["attachment_size_limit"] == 10 * 1024 * 1024
        assert data["data"]["options"] == [
            {"name": "prompt", "type": 3, "value": "a cat"},
            {"name": "hd", "type": 5, "value": True},
        ]

        base = fake.api_base
        callback = f"{base}/interactions/{interaction.id}/{interaction.token}/callback"
        async with http.post(callback, json={"type": 5, "data": {"flags": 64}}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"
            body = await resp.json()
            assert body["interaction"]["response_message_loading"] is True
            assert body["interaction"]["response_message_ephemeral"] is True
        async with http.post(callback, json={"type": 5}) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, 40060)

        # Oversized upload for this interaction's limit.
        original = f"{base}/webhooks/{fake.application_id}/{interaction.token}/messages/@original"
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("payload_json", json.dumps({"content": "big"}))
        form.add_field("files[0]", io.BytesIO(b"y" * (10 * 1024 * 1024 + 1)), filename="big.png")
        async with http.patch(original, data=form) as resp:
            assert (resp.status, (await resp.json())["code"]) == (413, 40005)
        async with http.patch(original, json={"content": "x" * 2001}) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, 50035)

        # The first followup after a defer completes the loading message.
        followup = f"{base}/webhooks/{fake.application_id}/{interaction.token}"
        async with http.post(followup, json={"content": "done"}) as resp:
            assert resp.status == 200
        message = fake.original_message(interaction)
        assert message is not None
        assert (message["content"], message["flags"]) == ("done", 64)

        # Expired token: 401 / 50027.
        fake.expire_token(interaction)
        async with http.get(original) as resp:
            assert (resp.status, (await resp.json())["code"]) == (401, 50027)

        # Unknown route: 404 JSON, recorded.
        async with http.get(f"{base}/nope") as resp:
            assert resp.status == 404
            assert resp.headers["Content-Type"] == "application/json"
        assert fake.requests[-1].path == "/nope"

        # An old interaction's token is already invalid.
        old = await fake.send_interaction(
            "imagine", created_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
        )
        await ws.receive_json()
        old_original = f"{base}/webhooks/{fake.application_id}/{old.token}/messages/@original"
        async with http.patch(old_original, json={"content": "late"}) as resp:
            assert (resp.status, (await resp.json())["code"]) == (401, 50027)
        await ws.close()


async def test_webhook_bucket_answers_real_429(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        ws, _ = await _raw_gateway_client(fake, http)
        interaction = await fake.send_interaction("ping")
        base = fake.api_base
        callback = f"{base}/interactions/{interaction.id}/{interaction.token}/callback"
        async with http.post(callback, json={"type": 4, "data": {"content": "hi"}}) as resp:
            assert resp.status == 200
        url = f"{base}/webhooks/{fake.application_id}/{interaction.token}/messages/@original"
        statuses = []
        for _ in range(6):
            async with http.get(url) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert resp.headers["Via"]
                    assert (await resp.json())["retry_after"] > 0
        assert statuses == [200] * 5 + [429]
        assert fake.rate_limited_responses == 1
        await ws.close()
