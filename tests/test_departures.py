"""Servers the bot left: when Discord removes the bot from a server (GUILD_DELETE without
`unavailable`), or did while the bot was offline, the members' personal data there goes at once
and the server's configuration after the grace period, unless the bot is back by then. The
ledger's totals stay. An outage (an unavailable server) is not a departure."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.departures import GRACE_DAYS, ServerDepartures
from bot.domain import (
    Departure,
    ImageRequest,
    Job,
    LogKind,
    MemberDefaults,
    NewJob,
    SpendLimits,
    TrayImage,
)
from bot.retention import HistoryRetention
from bot.store import open_storage
from tests.clock import FakeClock
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kie_server import FakeKie, make_png
from tests.helpers import (
    READY_TITLE,
    admin_command,
    answer_text,
    bot_is_idle,
    embed_title,
    eventually,
    final_answer,
    is_private,
    user_resolved,
)

MEMBER = 7301
BANNED = 7302
PROMPT = "a secret garden at dawn, ink and wash"
DAY = 86400.0


def _rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, params).fetchall()


def _count(path: Path, table: str, guild: int, column: str = "guild_id") -> int:
    return int(_rows(path, f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", guild)[0][0])


def _personal(path: Path, guild: int) -> dict[str, int]:
    """What the bot keeps of the server's members: prompts and tokens of its jobs, trays and
    defaults."""
    jobs = _rows(
        path,
        """SELECT SUM(prompt != ''), SUM(interaction_token IS NOT NULL),
                  SUM(callback_token IS NOT NULL), SUM(result_url IS NOT NULL)
           FROM jobs WHERE guild_id = ?""",
        guild,
    )[0]
    return {
        "prompts": jobs[0] or 0,
        "interaction tokens": jobs[1] or 0,
        "callback tokens": jobs[2] or 0,
        "links": jobs[3] or 0,
        "tray images": _count(path, "reference_tray", guild, "guild_key"),
        "member defaults": _count(path, "member_defaults", guild, "guild_key"),
    }


def _configuration(path: Path, guild: int) -> dict[str, int]:
    tables = ("guild_settings", "blocked_terms", "bans", "moderation_log")
    return {table: _count(path, table, guild) for table in tables}


def _totals(path: Path, guild: int) -> list[tuple[Any, ...]]:
    """The ledger: units per day, member, server and outcome."""
    return _rows(
        path,
        """SELECT day, user_id, guild_id, state, SUM(units), COUNT(*) FROM jobs
           WHERE guild_id = ? GROUP BY day, user_id, guild_id, state ORDER BY 1, 2, 4""",
        guild,
    )


async def _a_server_with_everything(fake: FakeDiscord) -> None:
    """A delivered image, a member's defaults and reference tray, and the server's quota,
    blocked term, ban (each logged in the moderation log)."""
    final = await final_answer(
        fake, await fake.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    )
    assert embed_title(final) == READY_TITLE
    await final_answer(
        fake, await fake.send_interaction("settings", {"aspect_ratio": "16:9"}, user_id=MEMBER)
    )
    posted = await fake.send_message(
        "look", user_id=BANNED, mention_bot=False, files=[(make_png(4, 4), "a.png", "image/png")]
    )
    await final_answer(
        fake, await fake.use_message_command("Use as reference", posted, user_id=MEMBER)
    )
    await admin_command(fake, "server", "quota", {"units": 3})
    await admin_command(fake, "moderation", "block", {"term": "gore"})
    await admin_command(
        fake,
        "moderation",
        "ban",
        {"member": discord.Object(BANNED)},
        resolved=user_resolved(BANNED),
    )


def _retention(running: RunningBot, clock: FakeClock) -> HistoryRetention:
    """The retention pass the bot runs every 6 hours, on the bot's own departures."""
    return HistoryRetention(running.storage.jobs, 90, clock, departures=running.bot.departures)


async def _ready(running: RunningBot) -> None:
    """discord.py's on_ready has run (it waits for the servers READY listed) and been handled."""
    await eventually(running.bot.is_ready, 10, what="on_ready")
    await bot_is_idle()


@pytest.mark.sqlite_only  # reads the SQLite file's rows directly
async def test_a_server_that_removes_the_bot_loses_its_members_data_at_once_and_keeps_totals(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    clock = FakeClock(time.time())
    running = await start_bot(clock=clock)
    await _ready(running)  # a configuration goes only once the bot has seen its servers
    await _a_server_with_everything(fake_discord)
    path, guild = running.settings.database_path, fake_discord.guild_id
    before = _personal(path, guild)
    # A delivered job's interaction token is cleared at delivery already; a refunded one's
    # may stay, and any left is cleared below.
    assert all(n for what, n in before.items() if what != "interaction tokens"), before
    blocked = await final_answer(
        fake_discord, await fake_discord.send_interaction("imagine", {"prompt": "gore on a wall"})
    )
    assert is_private(blocked), "the server's term is in force (and its rules are in memory)"
    await bot_is_idle()  # the refusal's moderation log entry is written after the answer
    configured = _configuration(path, guild)
    assert all(configured.values()), configured
    totals = _totals(path, guild)

    await fake_discord.remove_bot()

    nothing = dict.fromkeys(_personal(path, guild), 0)
    await eventually(lambda: _personal(path, guild) == nothing, what="members' data gone")
    assert _totals(path, guild) == totals, "units per day, member and outcome stay"
    assert _configuration(path, guild) == configured, "kept for the grace period"

    clock.advance((GRACE_DAYS - 1) * DAY)
    await _retention(running, clock).sweep()
    assert _configuration(path, guild) == configured, "a day before the end of the grace"

    clock.advance(2 * DAY)
    await _retention(running, clock).sweep()
    assert _configuration(path, guild) == dict.fromkeys(configured, 0)
    assert _count(path, "role_quotas", guild) == _count(path, "allowed_channels", guild) == 0
    assert _totals(path, guild) == totals, "the ledger outlives the configuration"
    ((purged,),) = _rows(path, "SELECT purged_at FROM departed_servers WHERE guild_id = ?", guild)
    assert purged == clock()

    await fake_discord.add_bot_back()  # invited again: a fresh start, no rule left in memory
    again = await final_answer(
        fake_discord, await fake_discord.send_interaction("imagine", {"prompt": "gore on a wall"})
    )
    assert embed_title(again) == READY_TITLE, answer_text(again)


@pytest.mark.sqlite_only  # reads the SQLite file's rows directly
async def test_a_server_that_invites_the_bot_back_within_the_grace_keeps_its_configuration(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    clock = FakeClock(time.time())
    running = await start_bot(clock=clock)
    await _ready(running)
    await _a_server_with_everything(fake_discord)
    path, guild = running.settings.database_path, fake_discord.guild_id
    configured = _configuration(path, guild)

    await fake_discord.remove_bot()
    await eventually(lambda: not _personal(path, guild)["prompts"], what="prompts blanked")
    clock.advance(10 * DAY)
    await fake_discord.add_bot_back()
    await eventually(
        lambda: not _rows(path, "SELECT 1 FROM departed_servers"), what="the return recorded"
    )

    clock.advance(GRACE_DAYS * DAY)
    await _retention(running, clock).sweep()
    assert _configuration(path, guild) == configured
    refused = await final_answer(
        fake_discord, await fake_discord.send_interaction("imagine", {"prompt": "gore on a wall"})
    )
    assert is_private(refused), answer_text(refused)
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 1, "the blocklist still works"


@pytest.mark.sqlite_only  # reads the SQLite file's rows directly
async def test_a_server_left_while_the_bot_was_offline_is_found_at_the_next_start(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    clock = FakeClock(time.time())
    running = await start_bot(clock=clock)
    await _a_server_with_everything(fake_discord)
    path, guild = running.settings.database_path, fake_discord.guild_id
    configured, totals = _configuration(path, guild), _totals(path, guild)
    await running.bot.close()

    await fake_discord.remove_bot()  # while offline: the next READY does not list it
    running = await start_bot(clock=clock)
    await _ready(running)

    assert _personal(path, guild) == dict.fromkeys(_personal(path, guild), 0)
    assert _configuration(path, guild) == configured
    assert _totals(path, guild) == totals
    ((left_at,),) = _rows(path, "SELECT left_at FROM departed_servers WHERE guild_id = ?", guild)
    assert left_at == clock(), "the grace counts from when the bot noticed"


@pytest.mark.sqlite_only  # reads the SQLite file's rows directly
async def test_a_server_in_an_outage_is_not_a_server_left(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    clock = FakeClock(time.time())
    running = await start_bot(clock=clock)
    await _a_server_with_everything(fake_discord)
    path, guild = running.settings.database_path, fake_discord.guild_id
    personal, configured = _personal(path, guild), _configuration(path, guild)

    await fake_discord.start_outage()  # GUILD_DELETE with unavailable: true
    await bot_is_idle()
    await running.bot.close()
    # Restarted during the outage: READY lists the server as unavailable, no GUILD_CREATE.
    running = await start_bot(clock=clock)
    await _ready(running)
    clock.advance((GRACE_DAYS + 1) * DAY)
    await _retention(running, clock).sweep()

    assert _personal(path, guild) == personal
    assert _configuration(path, guild) == configured
    assert not _rows(path, "SELECT 1 FROM departed_servers")


# --- the store, on its own ------------------------------------------------------------------------


async def test_every_table_that_keeps_something_of_a_server_names_it(tmp_path: Path) -> None:
    store = await open_storage(tmp_path / "imagine.db")
    try:
        for guild in (11, None):  # a server's job, and one in direct messages
            job = NewJob(5, guild, None, "2026-12-01", 1, ImageRequest("a cat", "1:1"))
            assert isinstance(await store.jobs.reserve(job, SpendLimits(member=9)), Job)
        await store.members.set_defaults(5, 12, MemberDefaults(aspect_ratio="16:9"))
        await store.members.set_defaults(5, None, MemberDefaults(aspect_ratio="16:9"))
        image = TrayImage("k", "https://cdn.example/a.png", "a.png", time.time())
        await store.trays.add(5, 13, [image], 0.0, 8)
        await store.moderation.add_blocked_term(14, "gore", "gore", 1)
        await store.moderation.log_moderation(15, 5, LogKind.REFUSED_BLOCKED_TERM, "gore")
        await store.settings.set_audit_channel(16, 99)
        await store.settings.allow_channel(17, 98)
        await store.settings.set_role_quota(18, 97, 3)
        await store.moderation.ban(19, 5, 1, None)

        assert await store.departures.servers_with_data() == set(range(11, 20))
    finally:
        await store.close()


async def test_a_server_back_before_its_configuration_goes_keeps_it(tmp_path: Path) -> None:
    """The bot's return and the removal race: whichever commits first decides."""
    store = await open_storage(tmp_path / "imagine.db")
    try:
        await store.moderation.add_blocked_term(21, "gore", "gore", 1)
        assert await store.departures.record_departure(21, 1000.0)
        assert not await store.departures.record_departure(21, 2000.0), "the first date stays"
        assert await store.departures.clear_departure(21)
        assert await store.departures.purge_configuration(21, 3000.0) is None
        assert await store.moderation.blocked_terms(21) == ["gore"]
    finally:
        await store.close()


async def test_servers_left_are_swept_even_when_history_is_kept_forever(tmp_path: Path) -> None:
    store = await open_storage(tmp_path / "imagine.db")
    try:
        clock = FakeClock(1_000_000.0)
        await store.moderation.add_blocked_term(31, "gore", "gore", 1)
        departures = ServerDepartures(store.departures, clock)
        await departures.reconcile([])  # READY without server 31: left while offline
        clock.advance((GRACE_DAYS + 1) * DAY)
        await HistoryRetention(store.jobs, 0, clock, departures=departures).sweep()
        assert await store.moderation.blocked_terms(31) == []
        assert await store.departures.departures() == [
            Departure(31, 1_000_000.0, 1_000_000.0 + (GRACE_DAYS + 1) * DAY)
        ]
    finally:
        await store.close()


async def test_a_process_on_some_shards_leaves_the_other_shards_servers_alone(
    tmp_path: Path,
) -> None:
    # SHARD_COUNT=2, SHARD_IDS=0: server 1 << 22 is on shard 1, another process's READY.
    theirs, mine = 1 << 22, 2 << 22
    store = await open_storage(tmp_path / "imagine.db")
    try:
        await store.moderation.add_blocked_term(theirs, "gore", "gore", 1)
        await store.moderation.add_blocked_term(mine, "gore", "gore", 1)
        departures = ServerDepartures(store.departures, FakeClock(1_000_000.0))
        await departures.reconcile([], ours=lambda guild_id: (guild_id >> 22) % 2 == 0)
        assert [d.guild_id for d in await store.departures.departures()] == [mine]
        assert await store.moderation.blocked_terms(theirs) == ["gore"]
    finally:
        await store.close()


async def test_a_stop_ends_a_ready_reconcile_still_running_before_the_database_closes(
    tmp_path: Path,
) -> None:
    # A quick restart: the bot is told to stop while its READY's reconcile still reads.
    store = await open_storage(tmp_path / "imagine.db")
    reading = asyncio.Event()

    class SlowDepartures:
        def __getattr__(self, name: str) -> Any:
            return getattr(store.departures, name)

        async def servers_with_data(self) -> set[int]:
            reading.set()
            await asyncio.Event().wait()  # a read that takes longer than the stop
            return set()

    departures = ServerDepartures(SlowDepartures(), FakeClock(1_000_000.0))  # type: ignore[arg-type]
    try:
        reconciling = asyncio.create_task(departures.reconcile([]))
        await asyncio.wait_for(reading.wait(), 5)
        await departures.stop()
        assert reconciling.cancelled(), "the reconcile no longer runs once stop returns"
    finally:
        await store.close()
