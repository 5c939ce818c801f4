"""/settings: a member's own defaults, applied by /imagine and the buttons, and private results.

Everything is read off the wire: what the member is told, what kie.ai is asked for, and where
(and how privately) the image is shown.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain import MemberDefaults
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, RecordedRequest
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    answer_text,
    embed_title,
    eventually,
    final_answer,
    is_private,
    nothing_else_happens,
)

MEMBER = 6060
OTHER = 6061
PROMPT = "a fox asleep in the snow, watercolour"
CREATE_TASK = "/api/v1/jobs/createTask"
EPHEMERAL = 64


async def settings(
    fake: FakeDiscord, options: dict[str, Any] | None = None, **kwargs: Any
) -> RecordedRequest:
    kwargs.setdefault("user_id", MEMBER)
    interaction = await fake.send_interaction("settings", options, **kwargs)
    return await final_answer(fake, interaction)


async def imagine(fake: FakeDiscord, **options: Any) -> RecordedRequest:
    interaction = await fake.send_interaction(
        "imagine", {"prompt": PROMPT, **options}, user_id=MEMBER
    )
    return await final_answer(fake, interaction)


def kie_inputs(fake_kie: FakeKie) -> list[dict[str, Any]]:
    return [call.json["input"] for call in fake_kie.calls_to(CREATE_TASK)]


# --- the defaults ---------------------------------------------------------------------------------


async def test_settings_without_options_shows_the_bots_defaults_privately(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot(cost_2k=3)
    answer = await settings(fake_discord)
    assert is_private(answer)
    text = answer_text(answer)
    assert "Your defaults here" in text
    assert "**1:1** (the bot's default)" in text
    assert "**1K** (the bot's default), 1 unit" in text
    assert "Private results: **off**" in text


async def test_a_members_defaults_apply_to_imagine_and_typed_options_still_win(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(cost_2k=3)
    answer = await settings(fake_discord, {"aspect_ratio": "16:9", "resolution": "2K"})
    assert is_private(answer)
    text = answer_text(answer)
    assert text.startswith("✅ Saved")
    assert "**16:9** (yours)" in text and "**2K** (yours), 3 units" in text

    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    assert embed_title(await imagine(fake_discord, aspect_ratio="3:4")) == READY_TITLE
    first, typed = kie_inputs(fake_kie)
    assert (first["aspect_ratio"], first["resolution"]) == ("16:9", "2K")
    assert (typed["aspect_ratio"], typed["resolution"]) == ("3:4", "2K")
    assert await running.units_charged() == 6  # two 2K images at this server's price


async def test_defaults_are_the_members_own(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot()
    await settings(fake_discord, {"aspect_ratio": "9:16"})
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=OTHER)
    assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    (other,) = kie_inputs(fake_kie)
    assert (other["aspect_ratio"], other["resolution"]) == ("1:1", "1K")


async def test_changing_one_default_keeps_the_others_and_reset_forgets_them_all(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await settings(fake_discord, {"aspect_ratio": "3:2", "private": True})
    text = answer_text(await settings(fake_discord, {"resolution": "2K"}))
    assert "**3:2** (yours)" in text and "Private results: **on**" in text
    saved = await running.storage.members.defaults(MEMBER, fake_discord.guild_id)
    assert saved == MemberDefaults(aspect_ratio="3:2", resolution="2K", private=True)

    answer = await settings(fake_discord, {"reset": True})
    assert answer_text(answer).startswith("✅ Back to the bot's defaults")
    assert await running.storage.members.defaults(MEMBER, fake_discord.guild_id) == (
        MemberDefaults()
    )
    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    (sent,) = kie_inputs(fake_kie)
    assert (sent["aspect_ratio"], sent["resolution"]) == ("1:1", "1K")


async def test_direct_messages_keep_their_own_defaults(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot(allow_dms=True)
    await settings(fake_discord, {"aspect_ratio": "4:3"}, guild_id=None)
    members = running.storage.members
    assert (await members.defaults(MEMBER, None)).aspect_ratio == "4:3"
    assert (await members.defaults(MEMBER, fake_discord.guild_id)).aspect_ratio is None


async def test_a_forged_auto_shape_is_refused_and_changes_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    answer = await settings(fake_discord, {"aspect_ratio": "auto"})
    assert is_private(answer)
    assert "not one the bot offers" in answer_text(answer)
    assert await running.storage.members.defaults(MEMBER, fake_discord.guild_id) == (
        MemberDefaults()
    )


async def test_the_store_keeps_model_and_count_and_refuses_values_out_of_range(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    members = running.storage.members
    wanted = MemberDefaults(model="pro", count=4)
    await members.set_defaults(MEMBER, 5, wanted)
    assert await members.defaults(MEMBER, 5) == wanted
    with pytest.raises(ValueError):
        MemberDefaults(model="ultra")
    with pytest.raises(ValueError):
        MemberDefaults(count=5)


# --- private results ------------------------------------------------------------------------------


async def private_member(fake: FakeDiscord) -> None:
    assert "Private results: **on**" in answer_text(await settings(fake, {"private": True}))


async def test_a_private_result_is_shown_to_its_member_alone(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    await private_member(fake_discord)
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    final = await final_answer(fake_discord, interaction)
    assert embed_title(final) == READY_TITLE
    first = fake_discord.calls_for(interaction)[0]
    assert first.json == {"type": 5, "data": {"flags": EPHEMERAL}}, "a private 'thinking…'"
    message = fake_discord.original_message(interaction)
    assert message is not None and message["flags"] & EPHEMERAL
    await running.idle()
    assert fake_discord.channel_messages.get(fake_discord.channel_id, []) == []


async def test_a_private_result_after_the_token_expired_comes_by_dm_not_in_the_channel(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await private_member(fake_discord)
    fake_kie.script_next(TaskScript(states=["waiting", "success"], step_seconds=0.4))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    await fake_kie.wait_for_tasks(1)
    fake_discord.expire_token(interaction)
    await running.idle()
    assert fake_discord.channel_messages.get(fake_discord.channel_id, []) == []
    (dm,) = fake_discord.channel_messages[fake_discord.dm_channel_id(MEMBER)]
    assert dm["embeds"][0]["title"] == READY_TITLE
    assert await running.job_states() == {"delivered": 1}


async def test_a_private_result_with_closed_dms_is_posted_nowhere_and_refunded(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await private_member(fake_discord)
    fake_kie.script_next(TaskScript(states=["waiting", "success"], step_seconds=0.4))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    await fake_kie.wait_for_tasks(1)
    fake_discord.expire_token(interaction)
    dm = fake_discord.dm_channel_id(MEMBER)
    fake_discord.fail_next("POST", f"/channels/{dm}/messages", status=403, code=50007, count=5)
    await running.idle()
    await nothing_else_happens(fake_discord)
    assert fake_discord.channel_messages.get(fake_discord.channel_id, []) == []
    assert fake_discord.channel_messages.get(dm, []) == []
    assert await running.job_states() == {"refunded": 1}
    assert await running.units_charged() == 0


async def test_re_roll_on_a_private_result_stays_private(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await private_member(fake_discord)
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    await running.idle()
    message = fake_discord.original_message(interaction)
    assert message is not None
    reroll = message["components"][0]["components"][0]["custom_id"]
    # The member turns private results off; a re-roll of a private image stays private anyway.
    await settings(fake_discord, {"private": False})
    press = await fake_discord.press_button(message["id"], reroll, user_id=MEMBER)
    await fake_discord.wait_for_request(
        lambda r: (
            r.method == "PATCH" and press.token in r.path and embed_title(r).endswith(" is ready")
        )
    )
    assert fake_discord.calls_for(press)[0].json == {"type": 5, "data": {"flags": EPHEMERAL}}
    await running.idle()
    assert fake_discord.channel_messages.get(fake_discord.channel_id, []) == []
    assert len(kie_inputs(fake_kie)) == 2


async def test_a_private_refusal_is_as_private_as_any(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot(daily_quota=1)
    await private_member(fake_discord)
    assert embed_title(await imagine(fake_discord)) == READY_TITLE
    refused = await imagine(fake_discord)
    assert is_private(refused)
    assert embed_title(refused) not in (READY_TITLE, FAILED_TITLE)
    assert len(kie_inputs(fake_kie)) == 1


async def test_delete_removes_a_private_result(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    await private_member(fake_discord)
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    await running.idle()
    message = fake_discord.original_message(interaction)
    assert message is not None
    delete = message["components"][0]["components"][-1]["custom_id"]
    assert delete.startswith("imagine:delete:")
    press = await fake_discord.press_button(message["id"], delete, user_id=MEMBER)
    await fake_discord.wait_for_request(lambda r: r.method == "DELETE" and press.token in r.path)
    await nothing_else_happens(fake_discord)
    assert fake_discord.message(message["id"]) is None
    (job,) = await running.storage.jobs.recent_jobs(MEMBER, fake_discord.guild_id, 1)
    assert job.deleted_at is not None


async def test_a_members_model_and_count_apply_to_imagine_and_typed_options_still_win(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(cost_pro_1k=2)
    answer = await settings(fake_discord, {"model": "pro", "count": 2})
    text = answer_text(answer)
    assert text.startswith("✅ Saved")
    assert "**Flux-2 pro** (yours)" in text and "**2** (yours)" in text

    # Nothing typed: two pro images, two units each, in one reply.
    await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=MEMBER)
    await eventually(lambda: len(kie_inputs(fake_kie)) == 2, 15)
    await running.idle()
    assert [i.get("prompt") for i in kie_inputs(fake_kie)] == [PROMPT, PROMPT]
    models = [call.json["model"] for call in fake_kie.calls_to(CREATE_TASK)]
    assert models == ["flux-2/pro-text-to-image"] * 2
    assert await running.units_charged() == 4

    # Typed options win over both defaults.
    await imagine(fake_discord, model="flex", count=1)
    await running.idle()
    models = [call.json["model"] for call in fake_kie.calls_to(CREATE_TASK)]
    assert models[2:] == ["flux-2/flex-text-to-image"]
    assert await running.units_charged() == 5

    # A forged count outside 1-4 is refused and saves nothing.
    refused = await settings(fake_discord, {"count": 9})
    assert is_private(refused) and "Saved" not in answer_text(refused)
    shown = answer_text(await settings(fake_discord))
    assert "**2** (yours)" in shown
