"""Self-test of the fake Discord: a real discord.py bot logs in, syncs, answers /ping,
presses buttons, sees roles and reads attachment options."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import io
import json
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

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


class MenuView(discord.ui.View):
    """One button per way of answering a button press, plus a link button."""

    def __init__(self, presses: list[discord.Interaction]) -> None:
        super().__init__(timeout=None)
        self.presses = presses
        self.add_item(discord.ui.Button(label="Docs", url="https://example.com/docs"))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        self.presses.append(interaction)
        return True

    @discord.ui.button(label="Update", custom_id="update")
    async def on_update(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await interaction.response.edit_message(content="updated", view=None)  # type 7

    @discord.ui.button(label="Defer", custom_id="defer")
    async def on_defer(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await interaction.response.defer()  # type 6
        await interaction.edit_original_response(content="edited after defer")
        await interaction.followup.send("after defer", ephemeral=True)

    @discord.ui.button(label="Reply", custom_id="reply")
    async def on_reply(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await interaction.response.send_message("replied")  # type 4

    @discord.ui.button(label="Think", custom_id="think")
    async def on_think(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await interaction.response.defer(thinking=True)  # type 5
        await interaction.followup.send("thought")

    @discord.ui.button(label="Delete", custom_id="delete", style=discord.ButtonStyle.danger)
    async def on_delete(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await interaction.response.defer()
        await interaction.delete_original_response()


class WidgetBot(commands.Bot):
    """Buttons, roles, attachment options and the owner, seen through discord.py."""

    def __init__(self) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.presses: list[discord.Interaction] = []

        @self.tree.command(name="menu", description="Answers with buttons")
        async def menu(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("menu", view=MenuView(self.presses))

        @self.tree.command(name="post", description="Posts buttons in the channel")
        async def post(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("posting", ephemeral=True)
            assert isinstance(interaction.channel, discord.TextChannel)
            await interaction.channel.send("board", view=MenuView(self.presses))

        @self.tree.command(name="whoami", description="Roles and permissions")
        async def whoami(interaction: discord.Interaction) -> None:
            assert isinstance(interaction.user, discord.Member)
            names = ",".join(r.name for r in interaction.user.roles if not r.is_default())
            admin = interaction.permissions.administrator
            await interaction.response.send_message(f"{names} admin={admin}")

        @self.tree.command(name="role", description="Echoes a role option")
        async def role(interaction: discord.Interaction, role: discord.Role) -> None:
            await interaction.response.send_message(f"{role.name} {role.id}")

        @self.tree.command(name="inspect", description="Reads an attachment option")
        async def inspect(interaction: discord.Interaction, image: discord.Attachment) -> None:
            data = await image.read()
            await interaction.response.send_message(
                f"{image.filename} {image.size} {image.content_type} {image.width}x{image.height}"
                f" ephemeral={image.ephemeral} {hashlib.sha256(data).hexdigest()}"
            )

        @self.tree.command(name="owner", description="DMs the application owner")
        async def owner(interaction: discord.Interaction) -> None:
            app = await self.application_info()
            await app.owner.send("hello owner")
            is_owner = await self.is_owner(interaction.user)
            await interaction.response.send_message(f"owner={is_owner}")

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


@contextlib.asynccontextmanager
async def _running(fake: FakeDiscord, client: commands.Bot) -> AsyncIterator[None]:
    task = asyncio.create_task(client.start(fake.token))
    try:
        await fake.wait_until_ready()
        yield
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


@pytest.fixture
async def widget_bot(fake: FakeDiscord) -> AsyncIterator[WidgetBot]:
    client = WidgetBot()
    async with _running(fake, client):
        yield client


async def _callback(fake: FakeDiscord, interaction: FakeInteraction) -> RecordedRequest:
    """The bot's successful callback for this interaction."""
    return await fake.wait_for_request(
        lambda r: (
            r.method == "POST"
            and r.path == f"/interactions/{interaction.id}/{interaction.token}/callback"
            and r.status == 200
        )
    )


async def _reply_text(fake: FakeDiscord, interaction: FakeInteraction) -> str:
    return str((await _callback(fake, interaction)).json["data"]["content"])


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


# --------------------------------------------------------------------------- buttons, roles, files


def _stored(fake: FakeDiscord, message_id: int | str) -> dict[str, Any]:
    message = fake.message(message_id)
    assert message is not None, f"no message {message_id}"
    return message


async def _menu_message_id(fake: FakeDiscord) -> str:
    """Run /menu and return the id of the message with its buttons."""
    menu = await fake.send_interaction("menu")
    await _callback(fake, menu)
    original = fake.original_message(menu)
    assert original is not None
    return str(original["id"])


def _custom_ids(message: dict[str, Any]) -> list[list[str | None]]:
    return [[b.get("custom_id") for b in row["components"]] for row in message["components"]]


async def test_menu_buttons_are_stored_with_discord_component_ids(
    fake: FakeDiscord, widget_bot: WidgetBot
) -> None:
    menu = await fake.send_interaction("menu")
    sent = (await _callback(fake, menu)).json["data"]["components"]
    assert "id" not in sent[0]  # discord.py leaves numbering to Discord
    original = fake.original_message(menu)
    assert original is not None
    assert _custom_ids(original) == [["update", "defer", "reply", "think", "delete"], [None]]
    rows = original["components"]
    assert [rows[0]["id"], *(b["id"] for b in rows[0]["components"])] == [1, 2, 3, 4, 5, 6]
    assert rows[1]["components"][0] == {
        "type": 2,
        "id": 8,
        "style": 5,
        "label": "Docs",
        "url": "https://example.com/docs",
        "disabled": False,
    }


async def test_update_button_edits_the_message_it_is_on(
    fake: FakeDiscord, widget_bot: WidgetBot
) -> None:
    message_id = await _menu_message_id(fake)
    press = await fake.press_button(message_id, "update", user_id=42, username="alice")
    callback = await _callback(fake, press)
    assert callback.json["type"] == 7
    assert callback.json["data"]["components"] == []
    edited = _stored(fake, message_id)
    assert (edited["content"], edited["components"]) == ("updated", [])
    assert edited["edited_timestamp"] is not None
    assert fake.original_message(press) == edited  # @original is the message with the button

    [pressed] = widget_bot.presses
    assert pressed.type is discord.InteractionType.component
    assert pressed.data == {"custom_id": "update", "component_type": 2}
    assert pressed.message is not None and pressed.message.id == int(message_id)
    assert pressed.message.content == "menu"
    assert pressed.user.id == 42 and pressed.channel_id == fake.channel_id

    with pytest.raises(ValueError, match="no button 'update'"):
        await fake.press_button(message_id, "update")  # the buttons are gone


async def test_deferred_update_edits_the_message_and_follows_up(
    fake: FakeDiscord, widget_bot: WidgetBot
) -> None:
    message_id = await _menu_message_id(fake)
    press = await fake.press_button(message_id, "defer")
    assert press.message_id == int(message_id)
    await fake.wait_for_request(
        lambda r: r.method == "POST" and r.path.endswith(f"/{press.token}") and r.status == 200
    )
    callback, edit, _ = fake.calls_for(press)
    assert callback.json == {"type": 6}
    assert edit.method == "PATCH" and edit.path.endswith("/messages/@original")
    assert _stored(fake, message_id)["content"] == "edited after defer"
    [followup] = fake.followups(press)
    assert (followup["content"], followup["flags"], followup["type"]) == ("after defer", 64, 0)
    metadata = followup["interaction_metadata"]
    assert (metadata["type"], metadata["interacted_message_id"]) == (3, message_id)
    assert "name" not in metadata


async def test_reply_and_thinking_answers_are_replies_to_the_button_message(
    fake: FakeDiscord, widget_bot: WidgetBot
) -> None:
    message_id = await _menu_message_id(fake)
    reply = await fake.press_button(message_id, "reply")
    assert (await _callback(fake, reply)).json["type"] == 4
    answer = fake.original_message(reply)
    assert answer is not None
    assert (answer["content"], answer["type"]) == ("replied", 19)
    assert answer["message_reference"]["message_id"] == message_id
    assert answer["interaction_metadata"]["type"] == 3

    think = await fake.press_button(message_id, "think")
    await fake.wait_for_request(
        lambda r: r.method == "POST" and r.path.endswith(f"/{think.token}") and r.status == 200
    )
    assert fake.calls_for(think)[0].json == {"type": 5}
    thought = fake.original_message(think)
    assert thought is not None
    assert (thought["content"], thought["flags"]) == ("thought", 0)  # the loading message
    assert fake.followups(think) == []
    assert _stored(fake, message_id)["content"] == "menu"


async def test_buttons_on_a_channel_message_and_deleting_original(
    fake: FakeDiscord, widget_bot: WidgetBot
) -> None:
    await fake.send_interaction("post")
    posted = await fake.wait_for_request(
        lambda r: r.method == "POST" and r.path == f"/channels/{fake.channel_id}/messages"
    )
    assert posted.json["components"][0]["components"][0]["custom_id"] == "update"
    [board] = fake.channel_messages[fake.channel_id]
    assert board["components"][0]["id"] == 1

    press = await fake.press_button(board["id"], "delete")
    await fake.wait_for_request(
        lambda r: r.method == "DELETE" and r.path.endswith(f"/{press.token}/messages/@original")
    )
    assert fake.calls_for(press)[-1].status == 204
    assert fake.channel_messages[fake.channel_id] == []
    assert fake.message(board["id"]) is None
    with pytest.raises(ValueError, match="no message"):
        await fake.press_button(board["id"], "update")


async def test_roles_reach_discord_py_before_and_after_connecting(fake: FakeDiscord) -> None:
    artist = await fake.add_role("Artist")  # before the bot connects: in GUILD_CREATE
    client = WidgetBot()
    async with _running(fake, client):
        admin = discord.Permissions(administrator=True).value
        moderator = await fake.add_role("Moderator", permissions=admin)  # GUILD_ROLE_CREATE
        member = await fake.send_interaction("whoami", roles=[artist])
        assert await _reply_text(fake, member) == "Artist admin=False"
        both = await fake.send_interaction("whoami", roles=[artist, moderator])
        assert await _reply_text(fake, both) == "Artist,Moderator admin=True"
        owner = await fake.send_interaction("whoami", user_id=fake.guild_owner_id)
        assert await _reply_text(fake, owner) == " admin=True"

        guild = client.get_guild(fake.guild_id)
        assert guild is not None and guild.owner_id == fake.guild_owner_id
        assert fake.guild_owner_id != fake.owner_id
        assert [r.name for r in guild.roles] == ["@everyone", "Artist", "Moderator"]

        option = {"role": {"type": 8, "value": str(moderator)}}
        chosen = await fake.send_interaction(
            "role", option, resolved=fake.resolved_roles(moderator)
        )
        assert await _reply_text(fake, chosen) == f"Moderator {moderator}"

        # Pressing a button carries the member's roles too.
        message_id = await _menu_message_id(fake)
        await _callback(fake, await fake.press_button(message_id, "reply", roles=[artist]))
        pressed = client.presses[-1]
        assert isinstance(pressed.user, discord.Member)
        assert [r.id for r in pressed.user.roles] == [fake.guild_id, artist]
    with pytest.raises(ValueError, match="no role"):
        fake.resolved_roles(123)


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    pixels = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


async def test_attachment_option_downloads_the_same_bytes(
    fake: FakeDiscord, widget_bot: WidgetBot
) -> None:
    image = _png(3, 2)
    attachment = fake.add_attachment(image, "cat.png", "image/png")
    interaction = await fake.send_interaction("inspect", {"image": attachment})
    digest = hashlib.sha256(image).hexdigest()
    expected = f"cat.png {len(image)} image/png 3x2 ephemeral=True {digest}"
    assert await _reply_text(fake, interaction) == expected


async def test_the_bot_finds_and_dms_the_application_owner(
    fake: FakeDiscord, widget_bot: WidgetBot
) -> None:
    interaction = await fake.send_interaction("owner", user_id=fake.owner_id)
    assert await _reply_text(fake, interaction) == "owner=True"
    dm = fake.channel_messages[fake.dm_channel_id(fake.owner_id)]
    assert [m["content"] for m in dm] == ["hello owner"]
    application = next(r for r in fake.requests if r.path == "/oauth2/applications/@me")
    assert application.status == 200


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


def _row(*components: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": list(components)}


def _button(custom_id: str | None = "go", **extra: Any) -> dict[str, Any]:
    button: dict[str, Any] = {"type": 2, "style": 1, "label": "Go", **extra}
    if custom_id is not None:
        button["custom_id"] = custom_id
    return button


def _error_codes(errors: dict[str, Any], path: str = "") -> dict[str, list[str]]:
    """Discord's nested form errors flattened to {"a.0.b": [codes]}."""
    flat: dict[str, list[str]] = {}
    for key, node in errors.items():
        if key == "_errors":
            flat[path] = [e["code"] for e in node]
        else:
            flat.update(_error_codes(node, f"{path}.{key}" if path else key))
    return flat


@pytest.mark.parametrize(
    ("components", "path", "code"),
    [
        ([_row(_button(f"b{i}")) for i in range(6)], "components", "BASE_TYPE_MAX_LENGTH"),
        (
            [_row(*(_button(f"b{i}") for i in range(6)))],
            "components.0.components",
            "BASE_TYPE_BAD_LENGTH",
        ),
        ([_row()], "components.0.components", "BASE_TYPE_BAD_LENGTH"),
        (
            [_row(_button("x" * 101))],
            "components.0.components.0.custom_id",
            "BASE_TYPE_BAD_LENGTH",
        ),
        (
            [_row(_button("a")), _row(_button("b"), _button("a"))],
            "components.1.components.1.custom_id",
            "COMPONENT_CUSTOM_ID_DUPLICATED",
        ),
        (
            [_row(_button(label="x" * 81))],
            "components.0.components.0.label",
            "BASE_TYPE_MAX_LENGTH",
        ),
        ([_row(_button(style=7))], "components.0.components.0.style", "BASE_TYPE_CHOICES"),
        (
            [_row(_button(None, style=5))],
            "components.0.components.0.url",
            "BUTTON_COMPONENT_URL_REQUIRED",
        ),
        (
            [_row(_button(style=5, url="https://example.com"))],
            "components.0.components.0.custom_id",
            "BUTTON_COMPONENT_LINK_HAS_CUSTOM_ID",
        ),
        (
            [_row(_button(None))],
            "components.0.components.0.custom_id",
            "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED",
        ),
        ([_button()], "components.0.type", "UNION_TYPE_CHOICES"),
    ],
    ids=[
        "six-rows",
        "six-buttons",
        "empty-row",
        "long-custom-id",
        "duplicate-custom-id",
        "long-label",
        "bad-style",
        "link-without-url",
        "link-with-custom-id",
        "button-without-custom-id",
        "button-outside-a-row",
    ],
)
async def test_invalid_components_are_refused_like_discord(
    fake: FakeDiscord, components: list[dict[str, Any]], path: str, code: str
) -> None:
    url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
    headers = {"Authorization": f"Bot {fake.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json={"content": "x", "components": components}, headers=headers) as resp,
    ):
        body = await resp.json()
    assert (resp.status, body["code"]) == (400, 50035)
    assert code in _error_codes(body["errors"]).get(path, []), body
    assert fake.channel_messages.get(fake.channel_id, []) == []


async def test_component_ids_keep_the_ones_the_bot_chose(fake: FakeDiscord) -> None:
    url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
    headers = {"Authorization": f"Bot {fake.token}"}
    components = [_row(_button("a"), _button("b", id=2)), _row(_button("c", emoji={"name": "🎨"}))]
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"components": components}, headers=headers) as resp:
            created = await resp.json()
        assert resp.status == 200
        rows = created["components"]
        assert [rows[0]["id"], *(b["id"] for b in rows[0]["components"])] == [1, 3, 2]
        assert [rows[1]["id"], rows[1]["components"][0]["id"]] == [4, 5]
        async with http.get(f"{url}/{created['id']}", headers=headers) as resp:
            assert (await resp.json())["components"] == rows
        edit = {"components": [_row(_button("a"), _button("a"))]}
        async with http.patch(f"{url}/{created['id']}", json=edit, headers=headers) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, 50035)
    assert _stored(fake, created["id"])["components"] == rows


async def test_component_interactions_on_the_wire(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        ws, _ = await _raw_gateway_client(fake, http)
        base = fake.api_base
        command = await fake.send_interaction("menu", user_id=7, username="bob")
        await ws.receive_json()
        callback = f"{base}/interactions/{command.id}/{command.token}/callback"
        for ctype in (6, 7):  # only component interactions may update a message
            async with http.post(callback, json={"type": ctype}) as resp:
                assert (resp.status, (await resp.json())["code"]) == (400, 50035)
        buttons = [
            _button("go"),
            _button("off", disabled=True),
            _button(None, style=5, url="https://example.com", label="Docs"),
        ]
        answer = {"type": 4, "data": {"content": "menu", "components": [_row(*buttons)]}}
        async with http.post(callback, json=answer) as resp:
            created = (await resp.json())["resource"]["message"]
        message_id = created["id"]
        assert [b["id"] for b in created["components"][0]["components"]] == [2, 3, 4]

        # What real Discord cannot produce.
        for custom_id, error in [("nope", "no button 'nope'"), ("off", "disabled")]:
            with pytest.raises(ValueError, match=error):
                await fake.press_button(message_id, custom_id)
        with pytest.raises(ValueError, match="no message"):
            await fake.press_button(123, "go")

        press = await fake.press_button(message_id, "go", user_id=8, username="carol")
        event = await ws.receive_json()
        assert (event["t"], event["d"]["type"]) == ("INTERACTION_CREATE", 3)
        data = event["d"]
        assert data["data"] == {"custom_id": "go", "component_type": 2}
        assert data["message"] == fake.message(message_id)
        assert data["message"]["interaction_metadata"]["user"]["id"] == "7"
        assert (data["channel_id"], data["member"]["user"]["id"]) == (str(fake.channel_id), "8")
        assert data["attachment_size_limit"] == 10 * 1024 * 1024

        press_callback = f"{base}/interactions/{press.id}/{press.token}/callback"
        async with http.post(press_callback, json={"type": 6}) as resp:
            body = await resp.json()
        assert body["interaction"]["type"] == 3
        assert body["interaction"]["response_message_id"] == message_id
        assert body["resource"] == {"type": 6}
        async with http.post(press_callback, json={"type": 7, "data": {}}) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, 40060)

        original = f"{base}/webhooks/{fake.application_id}/{press.token}/messages/@original"
        async with http.get(original) as resp:
            assert (await resp.json())["id"] == message_id
        bad = {"components": [_row(_button("a"), _button("a"))]}
        async with http.patch(original, json=bad) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, 50035)
        async with http.patch(original, json={"content": "edited", "components": []}) as resp:
            assert resp.status == 200
        assert _stored(fake, message_id)["content"] == "edited"
        assert fake.original_message(command) == fake.message(message_id)

        # A button on an ephemeral message: only the user who saw it can press it.
        private = await fake.send_interaction("menu", user_id=7)
        await ws.receive_json()
        hidden = {"type": 4, "data": {"flags": 64, "components": [_row(_button("go"))]}}
        private_callback = f"{base}/interactions/{private.id}/{private.token}/callback"
        async with http.post(private_callback, json=hidden) as resp:
            hidden_id = (await resp.json())["interaction"]["response_message_id"]
        with pytest.raises(ValueError, match="ephemeral"):
            await fake.press_button(hidden_id, "go", user_id=8)
        own = await fake.press_button(hidden_id, "go", user_id=7)
        assert (await ws.receive_json())["d"]["message"]["flags"] == 64
        update = {"type": 7, "data": {"content": "seen"}}
        own_callback = f"{base}/interactions/{own.id}/{own.token}/callback"
        async with http.post(own_callback, json=update) as resp:
            body = await resp.json()
        assert body["resource"]["message"]["content"] == "seen"
        assert body["interaction"]["response_message_ephemeral"] is True
        await ws.close()


async def test_attachment_options_on_the_wire(fake: FakeDiscord) -> None:
    image = _png(4, 5)
    attachment = fake.add_attachment(image, "cat.png", "image/png")
    assert attachment == {
        "id": attachment["id"],
        "filename": "cat.png",
        "size": len(image),
        "url": attachment["url"],
        "proxy_url": attachment["url"],
        "content_type": "image/png",
        "width": 4,
        "height": 5,
        "ephemeral": True,
    }
    notes = fake.add_attachment(b"plain", "notes.bin")
    assert {"content_type", "width", "height"} & notes.keys() == set()
    async with aiohttp.ClientSession() as http:
        async with http.get(attachment["url"]) as resp:
            assert (resp.status, resp.headers["Content-Type"]) == (200, "image/png")
            assert await resp.read() == image
        assert fake.attachment_bytes(attachment["id"]) == image

        ws, _ = await _raw_gateway_client(fake, http)
        role = await fake.add_role("Artist")
        created = await ws.receive_json()
        assert created["t"] == "GUILD_ROLE_CREATE"
        role_object = fake.resolved_roles(role)["roles"][str(role)]
        assert created["d"] == {"guild_id": str(fake.guild_id), "role": role_object}
        await fake.send_interaction(
            "inspect",
            {"image": attachment, "role": {"type": 8, "value": str(role)}},
            resolved=fake.resolved_roles(role),
        )
        data = (await ws.receive_json())["d"]["data"]
        assert data["options"] == [
            {"name": "image", "type": 11, "value": attachment["id"]},
            {"name": "role", "type": 8, "value": str(role)},
        ]
        assert data["resolved"] == {
            "attachments": {attachment["id"]: attachment},
            "roles": fake.resolved_roles(role)["roles"],
        }
        with pytest.raises(TypeError, match="add_attachment"):
            await fake.send_interaction("inspect", {"image": {"id": "1", "filename": "x"}})
        await ws.close()


class KeeperBot(commands.Bot):
    """A bot with one message context-menu command, which keeps the messages it is used on."""

    def __init__(self) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.kept: list[tuple[discord.Interaction, discord.Message]] = []

        async def keep(interaction: discord.Interaction, message: discord.Message) -> None:
            self.kept.append((interaction, message))
            await interaction.response.send_message("kept", ephemeral=True)

        self.tree.add_command(app_commands.ContextMenu(name="Keep this", callback=keep))

    async def setup_hook(self) -> None:
        await self.tree.sync()


async def test_message_commands_resolve_the_target_message_with_its_attachments(
    fake: FakeDiscord,
) -> None:
    client = KeeperBot()
    async with _running(fake, client):
        (synced,) = fake.synced_commands[None]
        assert (synced["name"], synced["type"]) == ("Keep this", 3)
        image = _png(3, 2)
        message_id = await fake.send_message(
            "look", user_id=55, mention_bot=False, files=[(image, "cat.png", "image/png")]
        )
        used = await fake.use_message_command("Keep this", message_id, user_id=42)
        callback = await _callback(fake, used)
        assert callback.json["data"]["flags"] & 64
        [(interaction, message)] = client.kept
        assert interaction.type is discord.InteractionType.application_command
        assert interaction.data is not None and interaction.data.get("target_id") == str(message_id)
        assert interaction.user.id == 42 and interaction.guild_id == fake.guild_id
        assert (message.id, message.author.id, message.content) == (message_id, 55, "look")
        [attachment] = message.attachments
        assert (attachment.filename, attachment.content_type) == ("cat.png", "image/png")
        assert attachment.size == len(image)
        assert await attachment.read() == image, "the fake CDN serves the message's file"
        with pytest.raises(ValueError, match="no message"):
            await fake.use_message_command("Keep this", 1234)
        with pytest.raises(ValueError, match="no message command"):
            await fake.use_message_command("Throw away", message_id)
