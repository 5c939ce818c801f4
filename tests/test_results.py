"""The buttons under a result (Re-roll, Vary, Delete), pressed at the wire against the real bot."""

from __future__ import annotations

from typing import Any

import aiohttp
import discord
import pytest

from bot.domain import JobState, Origin
from bot.kie import IMAGE_TO_IMAGE_MODEL, TEXT_TO_IMAGE_MODEL
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import I2I_RESULT_PNG, TINY_PNG, CreateFault, FakeKie, TaskScript
from tests.helpers import (
    ADMIN_PERMISSIONS,
    FAILED_TITLE,
    READY_TITLE,
    admin_command,
    answer_text,
    embed_of,
    embed_title,
    eventually,
    field,
    final_answer,
    first_answer_is_private,
    history_options,
    is_original_edit,
    is_private,
    user_resolved,
)

PROMPT = "a red kite over a windmill, gouache"
REQUESTER = 501
OTHER = 502
REROLL_TITLE = "🖼️ 🎲 Re-roll is ready"
VARY_TITLE = "🖼️ 🔀 Variation is ready"
EVERYONE = str(discord.Permissions(view_channel=True, send_messages=True).value)
MODERATOR = str(
    discord.Permissions(view_channel=True, send_messages=True, manage_messages=True).value
)


# --- reading the wire -----------------------------------------------------------------------------


def custom_ids(message: dict[str, Any]) -> list[str]:
    """The custom ids of a stored message's buttons, row by row."""
    return [
        button["custom_id"]
        for row in message.get("components", [])
        for button in row.get("components", [])
        if button.get("type") == 2 and "custom_id" in button
    ]


def buttons_for(job_id: int) -> list[str]:
    return [
        f"imagine:reroll:{job_id}",
        f"imagine:vary:{job_id}",
        f"imagine:edit:{job_id}",
        f"imagine:delete:{job_id}",
    ]


async def outcome(
    fake: FakeDiscord, interaction: FakeInteraction, timeout: float = 15
) -> RecordedRequest:
    """The edit of an interaction's reply that shows its image (any kind) or its failure."""

    def shows_outcome(request: RecordedRequest) -> bool:
        if not is_original_edit(request, interaction):
            return False
        title = embed_title(request)
        return title.endswith(" is ready") or title == FAILED_TITLE

    return await fake.wait_for_request(shows_outcome, timeout)


async def deliver(
    fake: FakeDiscord, running: RunningBot, *, user_id: int = REQUESTER, **options: Any
) -> tuple[FakeInteraction, RecordedRequest, dict[str, Any]]:
    """Run /imagine to a delivered and recorded result; return the interaction, the result
    edit and the stored message (the one the buttons are on)."""
    interaction = await fake.send_interaction(
        "imagine", {"prompt": PROMPT, **options}, user_id=user_id
    )
    final = await final_answer(fake, interaction)
    assert embed_title(final) == READY_TITLE, final.json
    await running.idle()
    message = fake.original_message(interaction)
    assert message is not None
    return interaction, final, message


async def used_today(running: RunningBot, user_id: int, guild_id: int) -> int:
    return (await running.storage.jobs.usage(user_id, guild_id, running.bot.quota.today())).used


async def set_audit_channel(fake: FakeDiscord) -> int:
    """Make the fake's channel the server's audit log; return its id."""
    audit = fake.channel_id
    channel = {"id": str(audit), "type": 0, "name": "audit", "permissions": ADMIN_PERMISSIONS}
    answer = await admin_command(
        fake,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit)}},
        resolved={"channels": {str(audit): channel}},
    )
    assert f"<#{audit}>" in answer_text(answer)
    return audit


async def post_forged_result(fake: FakeDiscord, custom_id: str) -> str:
    """A bot message in the channel with a result button for a job the bot does not know."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.api_base}/channels/{fake.channel_id}/messages",
            json={
                "embeds": [{"title": READY_TITLE, "description": "from an older database"}],
                "components": [
                    {
                        "type": 1,
                        "components": [
                            {"type": 2, "style": 1, "label": "Go", "custom_id": custom_id}
                        ],
                    }
                ],
            },
            headers={"Authorization": f"Bot {fake.token}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return str((await response.json())["id"])


# --- the buttons themselves -----------------------------------------------------------------------


async def test_a_delivered_result_carries_re_roll_vary_and_delete_for_its_job(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await deliver(fake_discord, running)
    _, _, second = await deliver(fake_discord, running)
    await running.idle()
    jobs = await running.storage.jobs.recent_jobs(REQUESTER, fake_discord.guild_id, 10)
    newest = max(job.id for job in jobs)
    assert custom_ids(second) == buttons_for(newest)
    labels = [b["label"] for row in second["components"] for b in row["components"]]
    assert labels == ["Re-roll", "Vary", "Edit", "Delete"]


async def test_a_failed_generation_has_no_buttons(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot()
    fake_kie.fail_create_next(CreateFault(code=422, msg="prompt is invalid"))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    final = await final_answer(fake_discord, interaction)
    assert embed_title(final) == FAILED_TITLE
    message = fake_discord.original_message(interaction)
    assert message is not None and custom_ids(message) == []


async def test_a_result_posted_in_the_channel_after_the_token_expired_has_the_buttons_too(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    fake_kie.script_next(TaskScript(states=["waiting", "success"], step_seconds=0.4))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    await fake_kie.wait_for_tasks(1)
    fake_discord.expire_token(interaction)
    await running.idle()
    (posted,) = fake_discord.channel_messages[fake_discord.channel_id]
    assert posted["embeds"][0]["title"] == READY_TITLE
    assert custom_ids(posted) == buttons_for(1)


# --- Re-roll --------------------------------------------------------------------------------------


async def test_re_roll_makes_a_new_image_with_the_same_options_as_a_new_reply_and_charges_again(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running, aspect_ratio="16:9", resolution="2K")
    assert await running.units_charged() == 2
    parent = int(custom_ids(message)[0].rsplit(":", 1)[1])

    press = await fake_discord.press_button(
        message["id"], f"imagine:reroll:{parent}", user_id=REQUESTER
    )
    result = await outcome(fake_discord, press)

    assert fake_discord.calls_for(press)[0].json == {"type": 5}, "a public 'thinking…' reply"
    assert embed_title(result) == REROLL_TITLE
    original, again = (call.json for call in fake_kie.calls_to("/api/v1/jobs/createTask"))
    assert again == original
    assert again["model"] == TEXT_TO_IMAGE_MODEL
    assert again["input"] == {
        "prompt": PROMPT,
        "aspect_ratio": "16:9",
        "resolution": "2K",
        "nsfw_checker": True,
    }
    assert result.files and result.files[0].data == fake_kie.created_tasks()[1].script.image
    assert field(result, "Options") == "16:9 · 2K"

    reply = fake_discord.original_message(press)
    assert reply is not None and reply["id"] != message["id"], "a new message"
    assert reply["message_reference"]["message_id"] == message["id"]
    kept = fake_discord.message(message["id"])
    assert kept is not None and kept["attachments"] == message["attachments"], "first stays"

    await running.idle()
    child = await running.storage.jobs.get_job(parent + 1)
    assert child is not None
    assert (child.origin, child.parent_job_id, child.user_id) == (Origin.REROLL, parent, REQUESTER)
    assert (child.image.prompt, child.image.aspect_ratio, child.image.resolution) == (
        PROMPT,
        "16:9",
        "2K",
    )
    assert child.state is JobState.DELIVERED
    assert custom_ids(reply) == buttons_for(child.id), "the re-roll has its own buttons"
    assert await running.units_charged() == 4
    assert field(result, "Quota left today") == "6 of 10"


async def test_anyone_may_re_roll_and_it_is_charged_to_them_not_the_requester(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running, resolution="2K")
    press = await fake_discord.press_button(
        message["id"], custom_ids(message)[0], user_id=OTHER, permissions=EVERYONE
    )
    result = await outcome(fake_discord, press)
    assert embed_title(result) == REROLL_TITLE
    guild = fake_discord.guild_id
    assert await used_today(running, REQUESTER, guild) == 2
    assert await used_today(running, OTHER, guild) == 2
    assert field(result, "Requested by") == f"<@{OTHER}>"
    assert field(result, "Quota left today") == "8 of 10"
    await running.idle()
    child = await running.storage.jobs.get_job(2)
    assert child is not None and child.user_id == OTHER and child.parent_job_id == 1


async def test_re_roll_with_the_quota_spent_is_refused_privately_and_costs_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(daily_quota=1)
    _, _, message = await deliver(fake_discord, running)
    press = await fake_discord.press_button(
        message["id"], custom_ids(message)[0], user_id=REQUESTER
    )
    refusal = await final_answer(fake_discord, press)
    assert is_private(refusal)
    assert "resets <t:" in answer_text(refusal)
    assert "Nothing was spent" in answer_text(refusal)
    assert first_answer_is_private(fake_discord, press), "no public placeholder at all"
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 1
    assert await running.units_charged() == 1
    assert await running.job_states() == {"delivered": 1}


async def test_a_banned_member_cannot_re_roll_someone_elses_result(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running)
    banned = await admin_command(
        fake_discord,
        "moderation",
        "ban",
        {"member": discord.Object(OTHER), "reason": "spam"},
        resolved=user_resolved(OTHER),
    )
    assert "can no longer use the bot" in answer_text(banned)
    press = await fake_discord.press_button(
        message["id"], custom_ids(message)[0], user_id=OTHER, permissions=EVERYONE
    )
    refusal = await final_answer(fake_discord, press)
    assert is_private(refusal)
    assert "can't use the image bot" in answer_text(refusal)
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 1
    assert await running.units_charged() == 1
    assert await used_today(running, OTHER, fake_discord.guild_id) == 0


async def test_re_roll_works_as_soon_as_the_result_is_on_screen(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    audit = await set_audit_channel(fake_discord)
    # Discord holds the audit post back for a moment, as a busy channel's rate limit does.
    fake_discord.rate_limit_next("POST", f"/channels/{audit}/messages", retry_after=1.0)
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT}, user_id=REQUESTER
    )
    final = await final_answer(fake_discord, interaction)
    assert embed_title(final) == READY_TITLE
    message = fake_discord.original_message(interaction)
    assert message is not None and custom_ids(message) == buttons_for(1)

    press = await fake_discord.press_button(
        message["id"], custom_ids(message)[0], user_id=REQUESTER
    )
    answer = await fake_discord.wait_for_request(
        lambda r: r.path.endswith("/callback") and str(press.id) in r.path
    )
    assert answer.json == {"type": 5}, answer.json
    assert embed_title(await outcome(fake_discord, press)) == REROLL_TITLE
    await running.idle()


# --- Vary -----------------------------------------------------------------------------------------


async def test_vary_sends_the_posted_image_to_image_to_image_with_auto_shape(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, first, message = await deliver(fake_discord, running, aspect_ratio="3:4")
    (posted_file,) = first.files
    (attachment,) = message["attachments"]

    press = await fake_discord.press_button(
        message["id"], custom_ids(message)[1], user_id=REQUESTER
    )
    result = await outcome(fake_discord, press)
    assert embed_title(result) == VARY_TITLE

    (upload_call,) = fake_kie.calls_to("/api/file-url-upload")
    assert upload_call.headers["authorization"] == f"Bearer {fake_kie.api_key}"
    assert upload_call.json["fileUrl"] == attachment["url"]
    assert upload_call.json["uploadPath"]
    (upload,) = fake_kie.uploads
    assert upload.source == attachment["url"]
    assert upload.data == posted_file.data == TINY_PNG, "the image the bot posted"

    _, create = fake_kie.calls_to("/api/v1/jobs/createTask")
    assert create.json["model"] == IMAGE_TO_IMAGE_MODEL
    assert create.json["input"] == {
        "prompt": PROMPT,
        "aspect_ratio": "auto",
        "resolution": "1K",
        "input_urls": [upload.download_url],
        "nsfw_checker": True,
    }
    assert create.json["input"]["input_urls"][0].startswith(fake_kie.upload_base_url)
    variation = fake_kie.created_tasks()[1]
    assert variation.input_images == [TINY_PNG], "kie.ai could fetch the reference"
    assert result.files[0].data == I2I_RESULT_PNG
    assert "reference image" in field(result, "Options")

    await running.idle()
    child = await running.storage.jobs.get_job(2)
    assert child is not None
    assert (child.origin, child.parent_job_id) == (Origin.VARY, 1)
    assert child.image.input_urls == (upload.download_url,)
    assert await running.units_charged() == 2


async def test_re_roll_of_a_variation_reuses_the_uploaded_reference(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running)
    vary = await fake_discord.press_button(message["id"], custom_ids(message)[1])
    assert embed_title(await outcome(fake_discord, vary)) == VARY_TITLE
    await running.idle()
    variation = fake_discord.original_message(vary)
    assert variation is not None
    reroll = await fake_discord.press_button(variation["id"], custom_ids(variation)[0])
    assert embed_title(await outcome(fake_discord, reroll)) == REROLL_TITLE
    assert len(fake_kie.uploads) == 1, "the file host's copy is used again"
    _, varied, rerolled = (c.json for c in fake_kie.calls_to("/api/v1/jobs/createTask"))
    assert rerolled == varied
    assert rerolled["model"] == IMAGE_TO_IMAGE_MODEL


# --- Delete ---------------------------------------------------------------------------------------


async def test_the_requester_deletes_the_result_and_history_says_deleted(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running)
    press = await fake_discord.press_button(
        message["id"], custom_ids(message)[-1], user_id=REQUESTER, permissions=EVERYONE
    )
    deleted = await fake_discord.wait_for_request(
        lambda r: r.method == "DELETE" and press.token in r.path
    )
    assert deleted.status == 204
    assert fake_discord.message(message["id"]) is None, "the result is gone"
    assert fake_discord.calls_for(press)[0].json == {"type": 6}, "no new message for a delete"

    async def marked_deleted() -> bool:
        job = await running.storage.jobs.get_job(1)
        return job is not None and job.deleted_at is not None

    await eventually(marked_deleted, what="the job to be marked deleted")
    job = await running.storage.jobs.get_job(1)
    assert job is not None
    assert job.state is JobState.DELIVERED
    assert await running.units_charged() == 1, "deleting gives nothing back"

    history = await final_answer(
        fake_discord,
        await fake_discord.send_interaction("history", history_options(), user_id=REQUESTER),
    )
    (entry,) = embed_of(history)["fields"]
    assert entry["value"].endswith("· deleted")
    assert "[open](" not in entry["value"]


async def test_delete_falls_back_to_the_channel_route_when_the_interaction_route_fails(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running)
    fake_discord.fail_next(
        "DELETE", "/messages/@original", status=403, code=50001, message="Missing Access"
    )
    await fake_discord.press_button(
        message["id"], custom_ids(message)[-1], user_id=REQUESTER, permissions=EVERYONE
    )
    deleted = await fake_discord.wait_for_request(
        lambda r: r.method == "DELETE" and r.path.endswith(f"/messages/{message['id']}")
    )
    assert deleted.path.startswith("/channels/") and deleted.status == 204
    assert fake_discord.message(message["id"]) is None


async def test_another_member_cannot_delete_a_result_and_is_told_why_privately(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running)
    press = await fake_discord.press_button(
        message["id"], custom_ids(message)[-1], user_id=OTHER, permissions=EVERYONE
    )
    answer = await final_answer(fake_discord, press)
    assert is_private(answer)
    assert f"<@{REQUESTER}>" in answer_text(answer)
    assert "manage messages" in answer_text(answer)
    assert answer.json["data"]["allowed_mentions"] == {"parse": []}
    assert fake_discord.message(message["id"]) is not None, "the result stays"
    assert not [r for r in fake_discord.requests if r.method == "DELETE"]
    job = await running.storage.jobs.get_job(1)
    assert job is not None and job.deleted_at is None


async def test_a_member_who_can_manage_messages_may_delete_and_the_audit_log_says_so(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    audit = await set_audit_channel(fake_discord)
    _, _, message = await deliver(fake_discord, running)
    await running.idle()
    press = await fake_discord.press_button(
        message["id"], custom_ids(message)[-1], user_id=OTHER, permissions=MODERATOR
    )
    post = await fake_discord.wait_for_request(
        lambda r: (
            r.method == "POST"
            and r.path == f"/channels/{audit}/messages"
            and embed_title(r) == "🗑️ Result deleted"
        )
    )
    assert fake_discord.message(message["id"]) is None
    job = await running.storage.jobs.get_job(1)
    assert job is not None and job.deleted_at is not None
    assert field(post, "Member") == f"<@{REQUESTER}>"
    assert field(post, "By") == f"<@{OTHER}>"
    assert PROMPT.split(",")[0] in field(post, "Details")
    assert post.json["allowed_mentions"] == {"parse": []}
    assert fake_discord.calls_for(press)[0].json == {"type": 6}


# --- after a restart, and buttons the bot does not know -------------------------------------------


@pytest.mark.parametrize("action", ["reroll", "delete"])
async def test_buttons_keep_working_after_a_restart(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, action: str
) -> None:
    first = await start_bot()
    _, _, message = await deliver(fake_discord, first)
    await first.bot.close()

    second = await start_bot()
    press = await fake_discord.press_button(message["id"], f"imagine:{action}:1", user_id=REQUESTER)
    if action == "reroll":
        result = await outcome(fake_discord, press)
        assert embed_title(result) == REROLL_TITLE
        assert result.files
        assert len(fake_kie.created_tasks()) == 2
        await second.idle()
        child = await second.storage.jobs.get_job(2)
        assert child is not None and (child.origin, child.parent_job_id) == (Origin.REROLL, 1)
    else:
        await fake_discord.wait_for_request(
            lambda r: r.method == "DELETE" and press.token in r.path
        )
        assert fake_discord.message(message["id"]) is None


@pytest.mark.parametrize("action", ["reroll", "vary", "delete"])
async def test_a_button_for_a_job_the_bot_does_not_know_answers_privately(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, action: str
) -> None:
    running = await start_bot()
    message_id = await post_forged_result(fake_discord, f"imagine:{action}:999")
    press = await fake_discord.press_button(message_id, f"imagine:{action}:999")
    answer = await final_answer(fake_discord, press)
    assert is_private(answer)
    assert "no record of this image" in answer_text(answer)
    assert fake_discord.message(message_id) is not None
    assert fake_kie.calls == []
    assert await running.job_states() == {}


async def test_a_button_for_a_refunded_job_does_nothing_but_say_so(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
) -> None:
    running = await start_bot()
    fake_kie.fail_create_next(CreateFault(code=422, msg="no"))
    failed = await fake_discord.send_interaction("imagine", {"prompt": PROMPT})
    assert embed_title(await final_answer(fake_discord, failed)) == FAILED_TITLE
    message_id = await post_forged_result(fake_discord, "imagine:reroll:1")
    press = await fake_discord.press_button(message_id, "imagine:reroll:1")
    answer = await final_answer(fake_discord, press)
    assert is_private(answer) and "no record of this image" in answer_text(answer)
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 1
    assert await running.job_states() == {"refunded": 1}


async def test_a_button_that_fails_inside_the_bot_still_gets_a_private_answer(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running)

    async def broken(job_id: int) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(running.bot.storage.jobs, "get_job", broken)
    press = await fake_discord.press_button(
        message["id"], custom_ids(message)[0], user_id=REQUESTER, permissions=EVERYONE
    )
    answer = await final_answer(fake_discord, press)
    assert is_private(answer)
    assert "something went wrong on our side" in answer_text(answer)
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 1, "nothing new was started"
