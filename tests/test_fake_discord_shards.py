"""The fake Discord's sharding, as Discord documents it: IDENTIFY's `shard: [shard_id,
num_shards]`, GET /gateway/bot's recommended `shards`, each guild's events only on the
connection of shard `(guild_id >> 22) % num_shards`, DMs on shard 0, and close code 4010 for
an invalid shard. Checked on the raw wire, then with discord.py's auto-sharded client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord.ext import commands

from tests.fakes.discord_server import FakeDiscord

SHARDS = 3


def guild_on(shard: int, n: int = 1) -> int:
    """A guild id on `shard` of SHARDS: its timestamp part (id >> 22) decides."""
    return ((1_000_000 + n) * SHARDS + shard) << 22 | 7


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


async def identify(
    fake: FakeDiscord, http: aiohttp.ClientSession, shard: Any
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(fake.gateway_url + "?v=10&encoding=json")
    assert (await ws.receive_json())["op"] == 10
    data = {"token": fake.token, "intents": 1, "properties": {}, "shard": shard}
    await ws.send_json({"op": 2, "d": data})
    return ws


async def dispatches(ws: aiohttp.ClientWebSocketResponse, quiet: float = 0.3) -> list[Any]:
    """Every dispatch the connection receives until it has been quiet for `quiet` seconds."""
    events = []
    with contextlib.suppress(TimeoutError):
        while True:
            message = await asyncio.wait_for(ws.receive(), quiet)
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            events.append(message.json())
    return events


async def test_gateway_bot_recommends_the_shard_count_set(fake: FakeDiscord) -> None:
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{fake.api_base}/gateway/bot") as response:
            assert (await response.json())["shards"] == 1
        fake.recommended_shards = SHARDS
        async with http.get(f"{fake.api_base}/gateway/bot") as response:
            body = await response.json()
    assert body["shards"] == SHARDS and body["url"] == fake.gateway_url


@pytest.mark.parametrize("shard", [[3, 3], [-1, 3], [0, 0], [1, 1], [0], "0,1", [0.0, 1]])
async def test_an_invalid_shard_is_closed_with_4010(fake: FakeDiscord, shard: Any) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await identify(fake, http, shard)
        closing = await ws.receive()
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4010
    assert fake.identify_count == 0


async def test_each_guild_s_events_reach_only_its_shard_and_dms_shard_zero(
    fake: FakeDiscord,
) -> None:
    guilds = [await fake.join_guild(guild_id=guild_on(s), offline=True) for s in range(SHARDS)]
    own_shard = (fake.guild_id >> 22) % SHARDS
    async with aiohttp.ClientSession() as http:
        sockets = [await identify(fake, http, [s, SHARDS]) for s in range(SHARDS)]
        await fake.wait_until_shards_ready(SHARDS, 5)
        for shard, ws in enumerate(sockets):
            ready, *creates = await dispatches(ws)
            assert ready["t"] == "READY" and ready["d"]["shard"] == [shard, SHARDS]
            mine = {guilds[shard].id} | ({fake.guild_id} if shard == own_shard else set())
            assert {int(g["id"]) for g in ready["d"]["guilds"]} == mine
            assert [c["t"] for c in creates] == ["GUILD_CREATE"] * len(mine)
            assert {int(c["d"]["id"]) for c in creates} == mine

        for shard, guild in enumerate(guilds):
            sent = await fake.send_interaction(
                "imagine", {"prompt": "x"}, guild_id=guild.id, channel_id=guild.channel_id
            )
            got = [await dispatches(ws, 0.2) for ws in sockets]
            assert [len(events) for events in got] == [int(s == shard) for s in range(SHARDS)]
            event = got[shard][0]
            assert event["t"] == "INTERACTION_CREATE" and event["d"]["token"] == sent.token

        await fake.send_interaction("imagine", {"prompt": "x"}, guild_id=None)  # a DM
        got = [await dispatches(ws, 0.2) for ws in sockets]
        assert [len(events) for events in got] == [1, 0, 0]
        for ws in sockets:
            await ws.close()


async def test_the_newest_session_of_a_shard_gets_its_events_and_none_is_an_error(
    fake: FakeDiscord,
) -> None:
    guild = await fake.join_guild(guild_id=guild_on(2), offline=True)
    async with aiohttp.ClientSession() as http:
        first = await identify(fake, http, [0, SHARDS])
        await dispatches(first)
        with pytest.raises(RuntimeError, match="no client is READY"):
            # Nobody runs shard 2: Discord would have no session to send it to.
            await fake.send_interaction("imagine", guild_id=guild.id, channel_id=guild.channel_id)
        old = await identify(fake, http, [2, SHARDS])
        new = await identify(fake, http, [2, SHARDS])
        await dispatches(old)
        await dispatches(new)
        await fake.send_interaction("imagine", guild_id=guild.id, channel_id=guild.channel_id)
        assert [len(await dispatches(ws, 0.2)) for ws in (first, old, new)] == [0, 0, 1]
        # A server joined now: its GUILD_CREATE goes to its shard's connection only.
        joined = await fake.join_guild(guild_id=guild_on(0, 5))
        got = [await dispatches(ws, 0.2) for ws in (first, old, new)]
        assert [[e["t"] for e in events] for events in got] == [["GUILD_CREATE"], [], []]
        assert got[0][0]["d"]["id"] == str(joined.id)
        for ws in (first, old, new):
            await ws.close()


class ShardedBot(commands.AutoShardedBot):
    def __init__(self, shard_ids: list[int]) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix="!", intents=intents, shard_count=SHARDS, shard_ids=shard_ids
        )


async def test_discord_py_processes_splitting_the_shards_see_only_their_guilds(
    fake: FakeDiscord,
) -> None:
    guilds = [await fake.join_guild(guild_id=guild_on(s), offline=True) for s in range(SHARDS)]
    clients = [ShardedBot([0, 1]), ShardedBot([2])]  # two processes, three shards
    tasks = [asyncio.create_task(client.start(fake.token)) for client in clients]
    try:
        await fake.wait_until_shards_ready(SHARDS, 15)
        for client in clients:
            await asyncio.wait_for(client.wait_until_ready(), 15)
        seen = [{g.id for g in client.guilds} for client in clients]
        own = fake.guild_id
        expected = [
            {g.id for g in guilds[:2]} | ({own} if (own >> 22) % SHARDS < 2 else set()),
            {guilds[2].id} | ({own} if (own >> 22) % SHARDS == 2 else set()),
        ]
        assert seen == expected
        assert sorted(clients[0].shards) == [0, 1] and sorted(clients[1].shards) == [2]
    finally:
        for client in clients:
            await client.close()
        await asyncio.gather(*(asyncio.wait_for(t, 5) for t in tasks), return_exceptions=True)
