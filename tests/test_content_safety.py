"""Content safety end to end: kie.ai's filter, age-restricted channels, spoilers, blocked images.

kie.ai's safety filter (`input.nsfw_checker`) is turned off only where the bot's operator
(ALLOW_NSFW), the server (`/server nsfw allow:True`) and the channel (age-restricted, or a thread
of one) all allow adult content. Everything is read off the wire: the createTask bodies the fake
kie.ai received and what the bot sent to the fake Discord.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, RecordedRequest
from tests.fakes.kie_server import CreateFault, FakeKie, TaskScript
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    admin_command,
    embed_of,
    embed_title,
    field,
    final_answer,
)

MEMBER = 7070
PROMPT = "a moonlit garden with a marble statue"
CREATE_TASK = "/api/v1/jobs/createTask"
SAFETY_TEXT = "kie.ai's safety filter blocked this image; try rewording."


# --- helpers --------------------------------------------------------------------------------------


async def server(
    fake: FakeDiscord, subcommand: str, options: dict[str, Any] | None = None
) -> RecordedRequest:
    return await admin_command(fake, "server", subcommand, options)


async def imagine_in(fake: FakeDiscord, channel_id: int) -> RecordedRequest:
    interaction = await fake.send_interaction(
        "imagine", {"prompt": PROMPT}, user_id=MEMBER, channel_id=channel_id
    )
    return await final_answer(fake, interaction)


def nsfw_checkers(fake: FakeKie) -> list[Any]:
    """The `input.nsfw_checker` of every createTask body kie.ai received, in order."""
    return [call.json["input"].get("nsfw_checker") for call in fake.calls_to(CREATE_TASK)]


def channel_lookups(fake: FakeDiscord, channel_id: int) -> list[RecordedRequest]:
    return [
        r for r in fake.requests if r.method == "GET" and r.path.endswith(f"/channels/{channel_id}")
    ]


# --- when the filter is off ----------------------------------------------------------------------


@pytest.mark.parametrize("operator_allows", [True, False], ids=["ALLOW_NSFW", "no-ALLOW_NSFW"])
@pytest.mark.parametrize("server_allows", [True, False], ids=["server-allows", "server-default"])
@pytest.mark.parametrize("age_restricted", [True, False], ids=["age-restricted", "normal-channel"])
async def test_kies_filter_is_off_only_when_operator_server_and_channel_all_allow_adult_content(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    operator_allows: bool,
    server_allows: bool,
    age_restricted: bool,
) -> None:
    channel = fake_discord.add_channel("art", nsfw=age_restricted)  # cached at GUILD_CREATE
    running = await start_bot(allow_nsfw=operator_allows)
    if server_allows:
        await server(fake_discord, "nsfw", {"allow": True})

    assert embed_title(await imagine_in(fake_discord, channel)) == READY_TITLE

    unfiltered = operator_allows and server_allows and age_restricted
    assert nsfw_checkers(fake_kie) == [not unfiltered]
    assert await running.job_states() == {"delivered": 1}


async def test_an_age_restricted_channel_the_bot_never_cached_counts_from_the_interaction(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(allow_nsfw=True)
    await server(fake_discord, "nsfw", {"allow": True})
    channel = fake_discord.add_channel("late-night", nsfw=True)  # after READY: not in the cache

    assert embed_title(await imagine_in(fake_discord, channel)) == READY_TITLE
    assert nsfw_checkers(fake_kie) == [False]


@pytest.mark.parametrize(
    ("parent_cached", "thread_cached"),
    [(True, True), (True, False), (False, False)],
    ids=["parent-and-thread-cached", "parent-cached-new-thread", "neither-cached"],
)
async def test_a_thread_of_an_age_restricted_channel_is_age_restricted_too(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    parent_cached: bool,
    thread_cached: bool,
) -> None:
    parent = thread = None
    if parent_cached:
        parent = fake_discord.add_channel("after-dark", nsfw=True)
        if thread_cached:
            thread = fake_discord.add_thread(parent)
    running = await start_bot(allow_nsfw=True)
    await server(fake_discord, "nsfw", {"allow": True})
    if parent is None:
        parent = fake_discord.add_channel("after-dark", nsfw=True)
    if thread is None:
        thread = fake_discord.add_thread(parent)

    assert embed_title(await imagine_in(fake_discord, thread)) == READY_TITLE

    assert nsfw_checkers(fake_kie) == [False]
    # Only a parent the bot has not seen is looked up, and only once.
    assert len(channel_lookups(fake_discord, parent)) == (0 if parent_cached else 1)
    assert await running.job_states() == {"delivered": 1}


async def test_a_thread_of_a_normal_channel_keeps_the_filter_on(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(allow_nsfw=True)
    await server(fake_discord, "nsfw", {"allow": True})
    parent = fake_discord.add_channel("chat", nsfw=False)
    thread = fake_discord.add_thread(parent)

    assert embed_title(await imagine_in(fake_discord, thread)) == READY_TITLE
    assert nsfw_checkers(fake_kie) == [True]


async def test_a_thread_whose_parent_cannot_be_looked_up_keeps_the_filter_on(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(allow_nsfw=True)
    await server(fake_discord, "nsfw", {"allow": True})
    parent = fake_discord.add_channel("after-dark", nsfw=True)
    thread = fake_discord.add_thread(parent)
    fake_discord.fail_next("GET", f"/channels/{parent}", status=403, code=50001)

    assert embed_title(await imagine_in(fake_discord, thread)) == READY_TITLE
    assert len(channel_lookups(fake_discord, parent)) == 1
    assert nsfw_checkers(fake_kie) == [True], "unknown counts as not age-restricted"


# --- when kie.ai's filter blocks ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fail_msg",
    ["Invalid prompt: prompt contains prohibited content", "NSFW content detected"],
)
async def test_an_image_blocked_by_kies_filter_says_so_and_gives_the_units_back(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, fail_msg: str
) -> None:
    running = await start_bot()
    fake_kie.script_next(
        TaskScript(states=["generating", "fail"], fail_code="422", fail_msg=fail_msg)
    )
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    final = await final_answer(fake_discord, interaction)

    assert embed_title(final) == FAILED_TITLE
    assert field(final, "What happened") == SAFETY_TEXT
    assert len(fake_kie.created_tasks()) == 1
    assert await running.units_charged() == 0
    assert await running.job_states() == {"refunded": 1}


async def test_a_prompt_kie_refuses_at_creation_as_prohibited_says_so_and_gives_the_units_back(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    fake_kie.fail_create_next(
        CreateFault(422, msg="Invalid prompt: prompt contains prohibited content")
    )
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    final = await final_answer(fake_discord, interaction)

    assert embed_title(final) == FAILED_TITLE
    assert field(final, "What happened") == SAFETY_TEXT
    assert fake_kie.created_tasks() == []
    assert await running.units_charged() == 0
    assert await running.job_states() == {"refunded": 1}


# --- spoilers -------------------------------------------------------------------------------------


async def test_spoilers_hide_results_in_age_restricted_channels_only(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    adult = fake_discord.add_channel("after-dark", nsfw=True)
    normal = fake_discord.add_channel("general-art", nsfw=False)
    await start_bot()
    answer = await server(fake_discord, "nsfw", {"spoiler": True})
    assert field(answer, "Adult content").endswith("spoilers in age-restricted channels: on")

    hidden = await imagine_in(fake_discord, adult)
    assert embed_title(hidden) == READY_TITLE
    (upload,) = hidden.files
    assert upload.filename.startswith("SPOILER_")
    assert "image" not in embed_of(hidden), "an embed image cannot be blurred: the file alone"

    shown = await imagine_in(fake_discord, normal)
    assert embed_title(shown) == READY_TITLE
    (upload,) = shown.files
    assert not upload.filename.startswith("SPOILER_")
    assert embed_of(shown)["image"]["url"] == f"attachment://{upload.filename}"

    # Spoilers are not adult content: the filter stays on in both channels.
    assert nsfw_checkers(fake_kie) == [True, True]


async def test_a_re_roll_in_an_age_restricted_channel_is_unfiltered_and_spoilered_too(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    adult = fake_discord.add_channel("after-dark", nsfw=True)
    running = await start_bot(allow_nsfw=True)
    await server(fake_discord, "nsfw", {"allow": True, "spoiler": True})
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT}, user_id=MEMBER, channel_id=adult
    )
    assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    await running.idle()
    message = fake_discord.original_message(interaction)
    assert message is not None
    reroll = next(
        button["custom_id"]
        for row in message["components"]
        for button in row["components"]
        if button.get("custom_id", "").startswith("imagine:reroll:")
    )

    press = await fake_discord.press_button(message["id"], reroll, user_id=MEMBER)
    again = await fake_discord.wait_for_request(
        lambda r: (
            r.method == "PATCH"
            and r.path.endswith(f"/{press.token}/messages/@original")
            and embed_title(r).endswith(" is ready")
        )
    )
    (upload,) = again.files
    assert upload.filename.startswith("SPOILER_")
    assert "image" not in embed_of(again)
    assert nsfw_checkers(fake_kie) == [False, False]


# --- /server settings -----------------------------------------------------------------------------


async def test_server_settings_show_adult_content_off_by_default(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot(allow_nsfw=True)
    state = field(await server(fake_discord, "settings"), "Adult content")
    assert state.startswith("off: kie.ai's safety filter is on in every channel")
    assert state.endswith("spoilers in age-restricted channels: off")


async def test_server_settings_say_when_the_operator_does_not_permit_adult_content(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    adult = fake_discord.add_channel("after-dark", nsfw=True)
    await start_bot()  # ALLOW_NSFW is false by default
    answer = await server(fake_discord, "nsfw", {"allow": True})
    assert "does not permit" in field(answer, "Adult content")
    assert "does not permit" in field(await server(fake_discord, "settings"), "Adult content")

    assert embed_title(await imagine_in(fake_discord, adult)) == READY_TITLE
    assert nsfw_checkers(fake_kie) == [True]


async def test_server_settings_show_adult_content_on_when_operator_and_server_allow_it(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot(allow_nsfw=True)
    await server(fake_discord, "nsfw", {"allow": True, "spoiler": True})
    state = field(await server(fake_discord, "settings"), "Adult content")
    assert state == (
        "on in age-restricted channels (kie.ai's safety filter off there)"
        " · spoilers in age-restricted channels: on"
    )

    await server(fake_discord, "nsfw", {"allow": False})
    state = field(await server(fake_discord, "settings"), "Adult content")
    assert state.startswith("off:")
