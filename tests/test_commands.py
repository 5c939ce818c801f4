"""The slash-command definitions Discord receives, and when the bot syncs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.__main__ import build_bot, build_kie_client
from bot.discord_bot import EXTENSIONS
from bot.settings import Settings
from bot.store import open_storage
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.helpers import final_answer


async def _definitions(tmp_path: Path) -> dict[str, dict[str, Any]]:
    settings = Settings(discord_token="t", kie_api_key="k", database_path=tmp_path / "db.sqlite")
    store = await open_storage(settings.database_path)
    async with aiohttp.ClientSession() as session:
        bot = build_bot(settings, store, build_kie_client(session, settings))
        for extension in EXTENSIONS:
            await bot.load_extension(extension)
        definitions = {c.name: c.to_dict(bot.tree) for c in bot.tree.get_commands()}
    await store.close()
    return definitions


async def test_every_extension_loads_and_commands_respect_discords_limits(tmp_path: Path) -> None:
    definitions = await _definitions(tmp_path)
    assert set(definitions) == {
        "imagine",
        "quota",
        "history",
        "moderation",
        "server",
        "Use as reference",
        "help",
        "settings",
    }
    menu = definitions.pop("Use as reference")
    assert menu["type"] == 3, "a message context-menu command"
    assert "description" not in menu or not menu["description"]

    def check(command: dict[str, Any]) -> None:
        assert 1 <= len(command["description"]) <= 100, command["name"]
        assert len(command.get("options", [])) <= 25
        for option in command.get("options", []):
            if option["type"] == 1:  # a subcommand
                check(option)
                continue
            assert 1 <= len(option["description"]) <= 100, option
            assert len(option.get("choices", [])) <= 25

    for command in definitions.values():
        check(command)


ADMIN_GROUPS = {
    "moderation": {
        "block",
        "unblock",
        "blocklist",
        "ban",
        "unban",
        "audit-channel",
        "allow-channel",
        "disallow-channel",
    },
    "server": {
        "settings",
        "quota",
        "role-quota",
        "grant",
        "reset",
        "budget",
        "limits",
        "credits",
        "stats",
        "nsfw",
        "model",
        "kie-key",
    },
}


@pytest.mark.parametrize("group", sorted(ADMIN_GROUPS))
async def test_admin_commands_are_for_server_managers_only(tmp_path: Path, group: str) -> None:
    definition = (await _definitions(tmp_path))[group]
    assert int(definition["default_member_permissions"]) == 1 << 5  # Manage Server
    assert definition["contexts"] == [0] or definition.get("dm_permission") is False
    assert {o["name"] for o in definition["options"]} == ADMIN_GROUPS[group]


async def test_imagine_declares_its_options_to_discord(tmp_path: Path) -> None:
    options = {o["name"]: o for o in (await _definitions(tmp_path))["imagine"]["options"]}
    prompt = options["prompt"]
    assert (prompt["required"], prompt["min_length"], prompt["max_length"]) == (True, 3, 5000)
    ratios = [c["value"] for c in options["aspect_ratio"]["choices"]]
    # auto only makes sense with a reference image; the bot refuses it without one.
    assert ratios == ["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "auto"]
    assert [c["value"] for c in options["resolution"]["choices"]] == ["1K", "2K"]
    models = options["model"]["choices"]
    assert [(c["name"], c["value"]) for c in models] == [("flex", "flex"), ("pro", "pro")]
    images = ("image", "image2", "image3", "image4")
    assert all(options[name]["type"] == 11 for name in images)  # ATTACHMENT
    optional = ("aspect_ratio", "resolution", "model", *images)
    assert not any(options[name]["required"] for name in optional)


async def test_commands_are_synced_once_not_on_every_restart(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    first = await start_bot()
    assert fake_discord.command_puts == 1
    assert {c["name"] for c in fake_discord.synced_commands[None]} == {
        "imagine",
        "quota",
        "history",
        "help",
        "settings",
        "moderation",
        "server",
        "Use as reference",
    }
    await first.bot.close()
    await start_bot()
    assert fake_discord.command_puts == 1, "unchanged commands are not synced again"


async def test_a_development_guild_gets_the_commands_instantly(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot(dev_guild_id=4242)
    puts = [r for r in fake_discord.requests if r.method == "PUT"]
    assert [r.path for r in puts] == [
        f"/applications/{fake_discord.application_id}/guilds/4242/commands"
    ]


async def test_a_failed_sync_does_not_stop_the_bot_and_is_retried_next_start(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    fake_discord.fail_next("PUT", "/commands", status=403, code=50001, message="Missing Access")
    first = await start_bot()
    interaction = await fake_discord.send_interaction("quota")
    assert "used **0**" in (await final_answer(fake_discord, interaction)).json["content"]
    await first.bot.close()
    await start_bot()
    puts = [r.status for r in fake_discord.requests if r.method == "PUT"]
    assert puts == [403, 200]
