"""A server's own kie.ai key (`/server kie-key`): checked with kie.ai's credit query, sealed at
rest, used for that server's jobs with its own rate budget, shown by its last four only."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from bot.domain import SealedKey
from bot.keyvault import KeyVault
from bot.logsafety import CHATTY_LOGGERS, add_secret, redact
from bot.store import DatabaseTarget, open_storage
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import FakeKie
from tests.helpers import (
    ADMIN,
    ADMIN_PERMISSIONS,
    FAILED_TITLE,
    READY_TITLE,
    admin_command,
    answer_text,
    bot_environment,
    bot_process,
    embed_title,
    eventually,
    final_answer,
    is_private,
)

SECRET = "a-long-random-operator-secret-for-tests"
SERVER_KEY = "server-own-kie-key-7c2e9f41ab12"
OTHER_GUILD = 424242
PROMPT = "a lighthouse in a storm, oil painting"
CREATE = "/api/v1/jobs/createTask"


async def open_key_form(fake: FakeDiscord, *, guild_id: int | None = None) -> FakeInteraction:
    raw = {"type": 2, "options": [{"name": "set", "type": 1, "options": []}]}
    extra: dict[str, Any] = {"guild_id": guild_id} if guild_id is not None else {}
    opened = await fake.send_interaction(
        "server", {"kie-key": raw}, user_id=ADMIN, permissions=ADMIN_PERMISSIONS, **extra
    )
    await fake.wait_for_request(lambda r: r.path.endswith("/callback") and str(opened.id) in r.path)
    return opened


async def set_key(fake: FakeDiscord, key: str, *, guild_id: int | None = None) -> RecordedRequest:
    opened = await open_key_form(fake, guild_id=guild_id)
    (callback,) = [r for r in fake.calls_for(opened) if r.path.endswith("/callback")]
    assert callback.json["type"] == 9, "a private form, not a message"
    submitted = await fake.submit_modal(opened, {"key": key})
    return await final_answer(fake, submitted)


async def key_command(
    fake: FakeDiscord, subcommand: str, *, guild_id: int | None = None
) -> RecordedRequest:
    raw = {"type": 2, "options": [{"name": subcommand, "type": 1, "options": []}]}
    extra: dict[str, Any] = {"guild_id": guild_id} if guild_id is not None else {}
    asked = await fake.send_interaction(
        "server", {"kie-key": raw}, user_id=ADMIN, permissions=ADMIN_PERMISSIONS, **extra
    )
    return await final_answer(fake, asked)


async def imagine(fake: FakeDiscord, *, user_id: int = 111, guild_id: int | None = None) -> Any:
    extra: dict[str, Any] = {"guild_id": guild_id} if guild_id is not None else {}
    asked = await fake.send_interaction("imagine", {"prompt": PROMPT}, user_id=user_id, **extra)
    return await final_answer(fake, asked)


def every_text(fake: FakeDiscord) -> str:
    return "\n".join(str(r.json) for r in fake.requests)


async def test_a_checked_key_is_saved_sealed_and_pays_for_the_servers_images(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY, credits=321)
    running = await start_bot(secret_key=SECRET)

    answer = await set_key(fake_discord, SERVER_KEY)
    assert is_private(answer)
    assert "…ab12" in answer_text(answer) and "321" in answer_text(answer)
    checks = [c for c in fake_kie.calls_to("/api/v1/chat/credit")]
    assert checks[-1].headers["authorization"] == f"Bearer {SERVER_KEY}"

    final = await imagine(fake_discord)
    assert embed_title(final) == READY_TITLE
    (create,) = fake_kie.calls_to(CREATE)
    assert create.headers["authorization"] == f"Bearer {SERVER_KEY}"
    assert fake_kie.accounts[SERVER_KEY].credits < 321, "the server's account paid"
    assert fake_kie.credits == 1000, "the operator's did not"
    assert await running.units_charged() == 1, "the server's quota still applies"

    shown = await key_command(fake_discord, "show")
    assert is_private(shown)
    assert "…ab12" in answer_text(shown) and f"<@{ADMIN}>" in answer_text(shown)
    assert SERVER_KEY not in every_text(fake_discord), "never shown back, anywhere"

    await running.idle()
    (stored,) = await running.storage.server_keys.server_keys()
    assert SERVER_KEY not in stored.sealed and stored.last_four == "ab12"
    if running.settings.database_url is None:  # the SQLite file itself, byte for byte
        path = running.settings.database_path
        raw = b"".join(
            p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()
        )
        assert stored.sealed.encode() in raw, "the file read is the one written"
        assert SERVER_KEY.encode() not in raw, "sealed at rest"


async def test_a_key_kie_refuses_is_refused_privately_and_not_saved(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(secret_key=SECRET)
    answer = await set_key(fake_discord, "not-a-real-key-0000")
    assert is_private(answer)
    assert "refused" in answer_text(answer) and "Nothing was changed" in answer_text(answer)
    assert await running.storage.server_keys.server_keys() == []

    await imagine(fake_discord)
    (create,) = fake_kie.calls_to(CREATE)
    assert create.headers["authorization"] == f"Bearer {fake_kie.api_key}"


async def test_removing_the_key_goes_back_to_the_bots_key(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY)
    running = await start_bot(secret_key=SECRET)
    await set_key(fake_discord, SERVER_KEY)
    removed = await key_command(fake_discord, "remove")
    assert is_private(removed) and "Removed" in answer_text(removed)
    assert await running.storage.server_keys.server_keys() == []

    await imagine(fake_discord)
    (create,) = fake_kie.calls_to(CREATE)
    assert create.headers["authorization"] == f"Bearer {fake_kie.api_key}"


async def test_require_server_keys_refuses_a_server_without_one_and_spends_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY)
    running = await start_bot(
        secret_key=SECRET, require_server_keys=True, owner_guild_id=OTHER_GUILD
    )
    refused = await imagine(fake_discord)
    assert is_private(refused)
    assert "/server kie-key set" in answer_text(refused)
    assert "Nothing was spent" in answer_text(refused)
    assert fake_kie.calls_to(CREATE) == []
    assert await running.units_charged() == 0

    await set_key(fake_discord, SERVER_KEY)
    assert embed_title(await imagine(fake_discord, user_id=112)) == READY_TITLE
    (create,) = fake_kie.calls_to(CREATE)
    assert create.headers["authorization"] == f"Bearer {SERVER_KEY}"

    removed = await key_command(fake_discord, "remove")
    assert "no new images" in answer_text(removed)
    again = await imagine(fake_discord, user_id=113)
    assert "/server kie-key set" in answer_text(again)
    shown = await key_command(fake_discord, "show")
    assert "the bot needs one to make images here" in answer_text(shown)
    assert len(fake_kie.calls_to(CREATE)) == 1


async def test_the_operators_own_server_uses_the_bots_key_under_require_server_keys(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(
        secret_key=SECRET, require_server_keys=True, owner_guild_id=fake_discord.guild_id
    )
    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    (create,) = fake_kie.calls_to(CREATE)
    assert create.headers["authorization"] == f"Bearer {fake_kie.api_key}"


async def test_without_secret_key_no_key_can_be_set(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY)
    running = await start_bot()
    answer = await set_key(fake_discord, SERVER_KEY)
    assert "SECRET_KEY" in answer_text(answer) and "Nothing was changed" in answer_text(answer)
    assert await running.storage.server_keys.server_keys() == []


async def test_each_key_keeps_to_its_own_rate_limit_in_a_burst(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    # kie.ai's 20 per 10 s, scaled down to 4 per second so the test is quick.
    fake_kie.submit_limit, fake_kie.submit_window = 4, 1.0
    guilds = [OTHER_GUILD + n for n in range(5)]
    keys = {guild: f"burst-key-{guild}-abcdef" for guild in guilds}
    for key in keys.values():
        fake_kie.add_account(key)
    running = await start_bot(secret_key=SECRET, submit_limit=(4, 1.0), max_running_per_server=0)
    for guild in guilds:
        await set_key(fake_discord, keys[guild], guild_id=guild)

    asked = [
        fake_discord.send_interaction(
            "imagine", {"prompt": PROMPT}, user_id=500 + n, guild_id=guild
        )
        for guild in guilds
        for n in range(8)
    ]
    interactions = await asyncio.gather(*asked)
    await asyncio.gather(*(final_answer(fake_discord, i, 60) for i in interactions))
    await running.idle(60)

    creates = fake_kie.calls_to(CREATE)
    assert len(creates) == 40
    for guild in guilds:
        mine = [c for c in creates if c.headers["authorization"] == f"Bearer {keys[guild]}"]
        assert len(mine) == 8
        times = sorted(c.at for c in mine)
        for index in range(len(times) - 4):
            assert times[index + 4] - times[index] > 1.0, "at most 4 a second per key"
        assert fake_kie.accounts[keys[guild]].submit_violations == 0
    assert fake_kie.violations == 0
    # Separate budgets: together they went faster than one key's limit allows.
    ordered = sorted(c.at for c in creates)
    assert any(ordered[i + 8] - ordered[i] < 1.0 for i in range(len(ordered) - 8))


async def test_server_keys_are_kept_on_every_backend(storage_target: DatabaseTarget) -> None:
    store = await open_storage(storage_target)
    try:
        vault = KeyVault(SECRET)
        key = SealedKey(7, vault.seal(SERVER_KEY), "ab12", ADMIN, 1000.0)
        await store.server_keys.put_server_key(key)
        assert await store.server_keys.server_key(7) == key
        newer = SealedKey(7, vault.seal("another-key-9999"), "9999", 5, 2000.0)
        await store.server_keys.put_server_key(newer)
        assert await store.server_keys.server_keys() == [newer]
        assert vault.open(newer.sealed) == "another-key-9999"
        assert await store.server_keys.delete_server_key(7)
        assert not await store.server_keys.delete_server_key(7)
        assert await store.server_keys.server_key(7) is None
    finally:
        await store.close()


@pytest.mark.parametrize("secret", [None, "a-different-secret-than-before"])
async def test_a_lost_secret_key_stops_the_bot_at_start_with_one_sentence(
    fake_discord: FakeDiscord, fake_kie: FakeKie, tmp_path: Path, secret: str | None
) -> None:
    database = tmp_path / "imagine.db"
    store = await open_storage(database)
    vault = KeyVault(SECRET)
    await store.meta.set("secret_key_check", vault.check_value())
    await store.server_keys.put_server_key(
        SealedKey(7, vault.seal(SERVER_KEY), "ab12", ADMIN, 1000.0)
    )
    await store.close()
    settings = {"SECRET_KEY": secret} if secret else {}
    env = bot_environment(fake_discord, fake_kie, database, WEBHOOK_PORT="0", **settings)
    process = await bot_process(env, tmp_path)
    try:
        status = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = (await process.stdout.read()).decode() if process.stdout else ""
    assert status == 2, output
    assert "SECRET_KEY" in output
    assert "Traceback" not in output
    assert SERVER_KEY not in output and (secret is None or secret not in output)
    assert fake_discord.identify_count == 0, "stopped before connecting to Discord"


def posts_to(fake: FakeDiscord, channel_id: int) -> list[RecordedRequest]:
    return [
        r
        for r in fake.requests
        if r.method == "POST" and r.path == f"/channels/{channel_id}/messages"
    ]


async def test_key_changes_and_its_failures_go_to_the_servers_audit_channel_not_the_operator(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_kie.add_account(SERVER_KEY, credits=3)  # less than one image costs
    ops = fake_discord.add_channel("ops")
    audit = fake_discord.channel_id
    channel = {"id": str(audit), "type": 0, "name": "audit", "permissions": ADMIN_PERMISSIONS}
    await start_bot(secret_key=SECRET, ops_channel_id=ops)
    await admin_command(
        fake_discord,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit)}},
        resolved={"channels": {str(audit): channel}},
    )

    await set_key(fake_discord, SERVER_KEY)
    failed = await imagine(fake_discord)
    assert embed_title(failed) == FAILED_TITLE
    (create,) = fake_kie.calls_to(CREATE)
    assert create.headers["authorization"] == f"Bearer {SERVER_KEY}"
    await key_command(fake_discord, "remove")

    await eventually(lambda: len(posts_to(fake_discord, audit)) >= 4, what="four audit posts")
    posts = {embed_title(p): str(p.json) for p in posts_to(fake_discord, audit)}
    assert sorted(posts) == sorted(
        [
            "🔑 kie.ai key set",
            "⛔ This server's kie.ai key failed",
            "💰 This server's kie.ai balance is low",  # below LOW_CREDITS_WARNING (100)
            "🔑 kie.ai key removed",
        ]
    )
    assert "…ab12" in posts["🔑 kie.ai key set"]
    assert "out of credits" in posts["⛔ This server's kie.ai key failed"]
    assert "3 credits left" in posts["💰 This server's kie.ai balance is low"]
    assert posts_to(fake_discord, ops) == [], "the operator's account is not the one at fault"
    assert SERVER_KEY not in every_text(fake_discord)
    changes = [r for r in caplog.records if getattr(r, "change", None) == "kie_key_set"]
    assert len(changes) == 1, "the admin change is logged once"
    # Discord's own DEBUG lines (the raw form submission) are held at INFO by the bot's logging.
    emitted = [
        r for r in caplog.records if r.name not in CHATTY_LOGGERS or r.levelno >= logging.INFO
    ]
    assert [r.name for r in emitted if SERVER_KEY in r.getMessage()] == []


def test_a_servers_key_is_blanked_from_log_lines_once_known() -> None:
    secret = "a-server-key-never-logged-42"
    add_secret(secret)
    assert redact(f"GET with Authorization {secret}", []) == "GET with Authorization [redacted]"
