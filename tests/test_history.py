"""/history: Show posts a result again from kie.ai's link; /history forget erases a member's
own prompts and links and leaves every total alone. Driven at the wire against the real bot."""

from __future__ import annotations

import sqlite3
from typing import Any

import aiohttp
import discord
import pytest

from bot.kie import RESULT_LIFETIME
from bot.ui.messages import SHOWN_AGAIN_TITLE
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import CreateFault, FakeKie, TaskScript
from tests.helpers import (
    ADMIN_PERMISSIONS,
    READY_TITLE,
    admin_command,
    answer_text,
    embed_of,
    embed_title,
    eventually,
    final_answer,
    first_answer_is_private,
    history_options,
    is_original_edit,
    is_private,
    nothing_else_happens,
    user_resolved,
)

PROMPT = "a paper boat on a rain gutter, ink wash"
REQUESTER = 601
OTHER = 602
EVERYONE = str(discord.Permissions(view_channel=True, send_messages=True).value)


# --- driving the bot ------------------------------------------------------------------------------


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """custom_id -> label of a stored message's buttons."""
    return {
        button["custom_id"]: button.get("label", "")
        for row in message.get("components", [])
        for button in row.get("components", [])
        if button.get("type") == 2 and "custom_id" in button
    }


async def imagine(
    fake: FakeDiscord, running: RunningBot, prompt: str = PROMPT, **kwargs: Any
) -> RecordedRequest:
    kwargs.setdefault("user_id", REQUESTER)
    interaction = await fake.send_interaction("imagine", {"prompt": prompt}, **kwargs)
    final = await final_answer(fake, interaction)
    await running.idle()
    return final


async def history_list(
    fake: FakeDiscord, user_id: int = REQUESTER, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run /history list; return its private answer's embed and the stored message."""
    interaction = await fake.send_interaction(
        "history", history_options(), user_id=user_id, **kwargs
    )
    answer = await final_answer(fake, interaction)
    assert is_private(answer)
    # The first follow-up after a "thinking…" defer completes the original response.
    message = fake.original_message(interaction)
    assert message is not None
    return embed_of(answer), message


async def press(
    fake: FakeDiscord, message: dict[str, Any], custom_id: str, user_id: int = REQUESTER
) -> FakeInteraction:
    return await fake.press_button(message["id"], custom_id, user_id=user_id, permissions=EVERYONE)


async def shown(fake: FakeDiscord, interaction: FakeInteraction) -> RecordedRequest:
    """The edit of the press's public reply that shows the image again."""
    return await fake.wait_for_request(
        lambda r: is_original_edit(r, interaction) and embed_title(r) == SHOWN_AGAIN_TITLE, 15
    )


async def private_answer(fake: FakeDiscord, interaction: FakeInteraction) -> str:
    """The private answer to a press that must post nothing, and that it was the first one."""
    answer = await final_answer(fake, interaction)
    assert first_answer_is_private(fake, interaction), "nothing public appeared"
    return answer_text(answer)


def file_fetches(fake_kie: FakeKie) -> int:
    return sum(1 for call in fake_kie.calls if "/files/" in call.path)


async def post_forged(fake: FakeDiscord, custom_id: str) -> dict[str, Any]:
    """A bot message in the channel carrying a button the bot never made for this member (what
    a modified client can send as a press)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.api_base}/channels/{fake.channel_id}/messages",
            json={
                "content": "forged",
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
        message = fake.message((await response.json())["id"])
        assert message is not None
        return message


async def age_delivery(running: RunningBot, job_id: int, seconds: float) -> None:
    """Move a job's delivery into the past, as if that much time had gone by."""
    # Either backend's database runs the store's SQL (`bot.store.sql.SqlDatabase`).
    await running.storage.backend.execute(  # type: ignore[attr-defined]
        "UPDATE jobs SET delivered_at = delivered_at - ? WHERE id = ?", (seconds, job_id)
    )


# --- Show -----------------------------------------------------------------------------------------


async def test_show_posts_the_result_again_publicly_with_fresh_buttons_and_charges_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    assert embed_title(await imagine(fake_discord, running)) == READY_TITLE
    fake_kie.fail_create_next(CreateFault(code=422, msg="no"))
    await imagine(fake_discord, running, "a refused one")
    embed, message = await history_list(fake_discord)
    names = [f["name"] for f in embed["fields"]]
    assert names == ["1. a refused one", f"2. {PROMPT}"]
    assert buttons(message) == {"imagine:show:1": "Show 2"}, "only delivered entries"
    fetched_before = file_fetches(fake_kie)

    pressed = await press(fake_discord, message, "imagine:show:1")
    result = await shown(fake_discord, pressed)

    assert fake_discord.calls_for(pressed)[0].json == {"type": 5}, "a public reply"
    assert result.files, "the image itself is attached again"
    reply = fake_discord.original_message(pressed)
    assert reply is not None and not reply["flags"] & 64
    assert set(buttons(reply)) == {
        "imagine:reroll:1",
        "imagine:vary:1",
        "imagine:edit:1",
        "imagine:delete:1",
    }
    fields = {f["name"]: f["value"] for f in embed_of(result)["fields"]}
    assert fields["Requested by"] == f"<@{REQUESTER}>"
    assert "Made" in fields and "Took" not in fields
    assert file_fetches(fake_kie) == fetched_before + 1, "fetched from kie.ai's link again"
    assert len(fake_kie.calls_to("/api/v1/jobs/createTask")) == 2, "no new generation"
    assert await running.units_charged() == 1, "showing again costs nothing"


async def test_a_result_kie_ai_has_deleted_is_refused_privately_as_expired(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await imagine(fake_discord, running)
    _, message = await history_list(fake_discord)
    fake_kie.delete_media()

    pressed = await press(fake_discord, message, "imagine:show:1")
    answer = await final_answer(fake_discord, pressed)

    assert is_private(answer)
    assert "no longer has that image" in answer_text(answer)
    reply = fake_discord.original_message(pressed)
    assert reply is None, "the public 'thinking…' reply was taken away"
    assert fake_kie.calls_to("/api/v1/common/download-url"), "a fresh link was asked for first"
    assert await running.units_charged() == 1


async def test_a_result_older_than_kie_ai_keeps_it_is_expired_without_asking_kie_ai(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await imagine(fake_discord, running)
    _, message = await history_list(fake_discord)
    assert "imagine:show:1" in buttons(message)
    await age_delivery(running, 1, RESULT_LIFETIME)
    fetched = file_fetches(fake_kie)

    pressed = await press(fake_discord, message, "imagine:show:1")  # the list shown before
    assert "no longer has that image" in await private_answer(fake_discord, pressed)
    assert file_fetches(fake_kie) == fetched, "nothing was downloaded"

    embed, fresh = await history_list(fake_discord)
    assert buttons(fresh) == {}, "an expired entry has no Show button"
    assert embed["fields"][0]["name"] == f"1. {PROMPT}", "it is still listed"


async def test_a_forged_show_button_for_someone_elses_job_is_refused_privately(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await imagine(fake_discord, running, user_id=OTHER)
    forged = await post_forged(fake_discord, "imagine:show:1")
    fetched = file_fetches(fake_kie)

    pressed = await press(fake_discord, forged, "imagine:show:1", user_id=REQUESTER)

    assert "isn't one of your images" in await private_answer(fake_discord, pressed)
    assert file_fetches(fake_kie) == fetched
    await nothing_else_happens(fake_discord, fake_kie)
    # Its owner may show it.
    own = await press(fake_discord, forged, "imagine:show:1", user_id=OTHER)
    await shown(fake_discord, own)


async def test_show_still_works_after_a_restart_between_the_list_and_the_press(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    first = await start_bot()
    await imagine(fake_discord, first)
    _, message = await history_list(fake_discord)
    await first.bot.close()

    second = await start_bot()
    await fake_discord.wait_until_ready()
    pressed = await press(fake_discord, message, "imagine:show:1")
    result = await shown(fake_discord, pressed)
    assert result.files
    assert await second.units_charged() == 1


async def test_show_respects_the_servers_bans_and_channel_rules(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await imagine(fake_discord, running)
    home = fake_discord.channel_id
    elsewhere = home + 100
    _, message = await history_list(fake_discord, channel_id=elsewhere)
    member = discord.Object(REQUESTER)

    await admin_command(
        fake_discord, "moderation", "ban", {"member": member}, resolved=user_resolved(REQUESTER)
    )
    banned = await press(fake_discord, message, "imagine:show:1")
    assert "can't use the image bot in this server" in await private_answer(fake_discord, banned)
    await admin_command(
        fake_discord, "moderation", "unban", {"member": member}, resolved=user_resolved(REQUESTER)
    )

    channel = {"id": str(home), "type": 0, "name": "art", "permissions": ADMIN_PERMISSIONS}
    option = {"channel": {"type": 7, "value": str(home)}}
    resolved = {"channels": {str(home): channel}}
    await admin_command(fake_discord, "moderation", "allow-channel", option, resolved=resolved)
    wrong = await press(fake_discord, message, "imagine:show:1")
    assert f"works in <#{home}>" in await private_answer(fake_discord, wrong)

    await admin_command(fake_discord, "moderation", "disallow-channel", option, resolved=resolved)
    await shown(fake_discord, await press(fake_discord, message, "imagine:show:1"))
    assert await running.units_charged() == 1


async def test_a_deleted_result_is_not_shown_again(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await imagine(fake_discord, running)
    _, message = await history_list(fake_discord)
    await running.storage.jobs.mark_result_deleted(1)
    pressed = await press(fake_discord, message, "imagine:show:1")
    assert "was deleted" in await private_answer(fake_discord, pressed)


# --- forget ---------------------------------------------------------------------------------------


async def figures(fake: FakeDiscord, owner_guild: int) -> list[Any]:
    """What /quota, /server credits and /owner servers show, over the wire."""
    quota = await final_answer(fake, await fake.send_interaction("quota", user_id=REQUESTER))
    credits = await admin_command(fake, "server", "credits")
    servers = await admin_command(fake, "owner", "servers", user_id=fake.owner_id)
    assert fake.guild_id == owner_guild
    return [answer_text(quota), answer_text(credits), embed_of(servers)["fields"]]


async def forget(
    fake: FakeDiscord, user_id: int = REQUESTER, **options: Any
) -> tuple[FakeInteraction, dict[str, Any]]:
    interaction = await fake.send_interaction(
        "history", history_options("forget", **options), user_id=user_id
    )
    answer = await final_answer(fake, interaction)
    assert is_private(answer)
    message = fake.original_message(interaction)
    assert message is not None
    return interaction, message


async def answered(fake: FakeDiscord, pressed: FakeInteraction) -> RecordedRequest:
    """The press's answer: the confirmation message updated in place."""
    return await fake.wait_for_request(
        lambda r: r.path.endswith("/callback") and str(pressed.id) in r.path
    )


@pytest.mark.sqlite_only  # reads the whole SQLite file for the forgotten words
async def test_forget_erases_prompts_and_links_after_confirmation_and_leaves_every_total_alone(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    guild = fake_discord.guild_id
    running = await start_bot(owner_guild_id=guild)
    await imagine(fake_discord, running)
    fake_kie.fail_create_next(CreateFault(code=500, msg="Invalid prompt: a secret prompt"))
    await imagine(fake_discord, running, "a secret prompt")
    await imagine(fake_discord, running, "someone else's", user_id=OTHER)
    before = await figures(fake_discord, guild)

    _, confirm = await forget(fake_discord)
    assert "Press the button" in confirm["content"]
    assert await running.storage.jobs.recent_jobs(REQUESTER, guild, 10), "nothing yet"
    (button,) = buttons(confirm)
    assert button == f"imagine:forget:here:{REQUESTER}"
    pressed = await press(fake_discord, confirm, button)
    done = await answered(fake_discord, pressed)
    assert done.json["type"] == 7 and "2 images forgotten" in done.json["data"]["content"]
    assert done.json["data"]["components"] == [], "the button is gone"

    embed, _ = await history_list(fake_discord)
    assert embed["description"].startswith("Nothing yet here")
    for job_id in (1, 2):
        job = await running.storage.jobs.get_job(job_id)
        assert job is not None and job.forgotten_at is not None
        assert job.image.prompt == "" and job.image_url is None and job.result_url is None
        assert job.task_id is None and "secret" not in (job.error or "")
    other, _ = await history_list(fake_discord, user_id=OTHER)
    assert [f["name"] for f in other["fields"]] == ["1. someone else's"], "only their own"
    assert await figures(fake_discord, guild) == before, "quota and spend reports unchanged"
    with sqlite3.connect(running.settings.database_path) as db:
        dump = "\n".join(db.iterdump())
    assert PROMPT not in dump and "a secret prompt" not in dump


async def test_forget_here_keeps_other_servers_and_everywhere_forgets_them_too(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    other_server = fake_discord.guild_id + 7
    await imagine(fake_discord, running)
    await imagine(fake_discord, running, "elsewhere", guild_id=other_server)

    _, confirm = await forget(fake_discord)
    assert "in this server" in confirm["content"]
    pressed = await press(fake_discord, confirm, f"imagine:forget:here:{REQUESTER}")
    await answered(fake_discord, pressed)
    embed, _ = await history_list(fake_discord)
    assert embed["description"].startswith("Nothing yet here")
    embed, _ = await history_list(fake_discord, guild_id=other_server)
    assert [f["name"] for f in embed["fields"]] == ["1. elsewhere"]

    _, confirm = await forget(fake_discord, everywhere=True)
    assert "in every server" in confirm["content"]
    await press(fake_discord, confirm, f"imagine:forget:everywhere:{REQUESTER}")

    async def all_forgotten() -> bool:
        return not await running.storage.jobs.recent_jobs(REQUESTER, other_server, 10)

    await eventually(all_forgotten, what="forgotten everywhere")
    embed, _ = await history_list(fake_discord)
    assert embed["description"].startswith("Nothing yet here")


async def test_a_forged_forget_button_for_someone_else_forgets_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await imagine(fake_discord, running)
    forged = await post_forged(fake_discord, f"imagine:forget:everywhere:{REQUESTER}")
    pressed = await press(fake_discord, forged, f"imagine:forget:everywhere:{REQUESTER}", OTHER)
    assert "someone else's" in await private_answer(fake_discord, pressed)
    job = await running.storage.jobs.get_job(1)
    assert job is not None and job.forgotten_at is None and job.image.prompt == PROMPT


async def test_a_job_still_being_made_is_not_forgotten_and_nothing_reaches_the_audit_channel(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    audit = fake_discord.channel_id
    channel = {"id": str(audit), "type": 0, "name": "audit", "permissions": EVERYONE}
    await admin_command(
        fake_discord,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit)}},
        resolved={"channels": {str(audit): channel}},
    )
    await imagine(fake_discord, running)
    fake_kie.script_next(TaskScript(states=["generating", "success"], step_seconds=1.5))
    slow = await fake_discord.send_interaction("imagine", {"prompt": "slow"}, user_id=REQUESTER)
    await fake_kie.wait_for_tasks(2)
    posted = len(fake_discord.channel_messages.get(audit, []))

    _, confirm = await forget(fake_discord)
    pressed = await press(fake_discord, confirm, f"imagine:forget:here:{REQUESTER}")
    done = await answered(fake_discord, pressed)
    assert "1 image forgotten" in done.json["data"]["content"]
    assert embed_title(await final_answer(fake_discord, slow)) == READY_TITLE
    await running.idle()
    embed, _ = await history_list(fake_discord)
    assert [f["name"] for f in embed["fields"]] == ["1. slow"], "finished after the forgetting"
    generations = len(fake_discord.channel_messages.get(audit, []))
    assert generations == posted + 1, "only the slow image's own audit post, no forgetting"


async def test_an_image_made_with_the_filter_off_is_shown_again_only_in_an_age_restricted_channel(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    adult = fake_discord.add_channel("after-dark", nsfw=True)
    normal = fake_discord.add_channel("general-art", nsfw=False)
    running = await start_bot(allow_nsfw=True)
    await admin_command(fake_discord, "server", "nsfw", {"allow": True, "spoiler": True})
    await imagine(fake_discord, running, channel_id=adult)
    job = await running.storage.jobs.get_job(1)
    assert job is not None and not job.image.nsfw_checker, "made with kie.ai's filter off"

    _, in_normal = await history_list(fake_discord, channel_id=normal)
    refused = await press(fake_discord, in_normal, "imagine:show:1")
    assert "age-restricted channel" in await private_answer(fake_discord, refused)

    _, in_adult = await history_list(fake_discord, channel_id=adult)
    result = await shown(fake_discord, await press(fake_discord, in_adult, "imagine:show:1"))
    (upload,) = result.files
    assert upload.filename.startswith("SPOILER_"), "still a spoiler"


async def test_a_lapsed_direct_link_is_shown_again_through_a_fresh_link_from_kie_ai(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    fake_kie.script_next(TaskScript(download_status=404))  # the direct link no longer answers
    await imagine(fake_discord, running)
    job = await running.storage.jobs.get_job(1)
    (task,) = fake_kie.created_tasks()
    assert job is not None and job.image_url == task.result_urls[0], "kie.ai's own link is kept"
    asked = len(fake_kie.calls_to("/api/v1/common/download-url"))

    _, message = await history_list(fake_discord)
    result = await shown(fake_discord, await press(fake_discord, message, "imagine:show:1"))
    assert result.files
    assert len(fake_kie.calls_to("/api/v1/common/download-url")) == asked + 1
