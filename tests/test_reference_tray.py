"""Several reference images per request (`image` to `image4`) and the reference tray ("Use as
reference" on a message, emptied by the next /imagine), end to end at the wire."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from bot.__main__ import database_target
from bot.domain import ImageRequest, JobState, NewJob, OverLimit, ReplyTarget, SpendLimits
from bot.kie import IMAGE_TO_IMAGE_MODEL, TEXT_TO_IMAGE_MODEL
from bot.settings import Settings
from bot.store import open_storage
from tests.clock import FakeClock
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import FakeKie, TaskScript, make_png
from tests.helpers import (
    READY_TITLE,
    answer_text,
    embed_title,
    eventually,
    field,
    final_answer,
    is_private,
    nothing_else_happens,
)

PROMPT = "the two cats together, as a watercolour"
MEMBER = 701
OTHER = 702
CREATE = "/api/v1/jobs/createTask"
UPLOAD = "/api/file-url-upload"
MENU = "Use as reference"
SLOW = TaskScript(states=["waiting", "generating", "success"], step_seconds=0.6)


def png(n: int) -> bytes:
    return make_png(4, 4, rgb=(n * 20 % 256, 40, 200 - n))


async def post_images(fake: FakeDiscord, *images: bytes, user_id: int = OTHER) -> int:
    """Someone's message with these PNGs attached (named image.png, as phones name them)."""
    files = [(data, "image.png", "image/png") for data in images]
    return await fake.send_message("look", user_id=user_id, mention_bot=False, files=files)


async def use_as_reference(
    fake: FakeDiscord, message_id: int, user_id: int = MEMBER
) -> RecordedRequest:
    interaction = await fake.use_message_command(MENU, message_id, user_id=user_id)
    answer = await final_answer(fake, interaction)
    assert is_private(answer), "the tray is the member's own business"
    assert fake.calls_for(interaction) == [answer], "one answer, nothing public"
    return answer


async def imagine(fake: FakeDiscord, user_id: int = MEMBER, **options: Any) -> FakeInteraction:
    return await fake.send_interaction("imagine", {"prompt": PROMPT, **options}, user_id=user_id)


def sent_images(fake_kie: FakeKie, index: int = -1) -> list[bytes]:
    """The images kie.ai fetched for a created task (from the file host's copies)."""
    return list(fake_kie.created_tasks()[index].input_images)


async def tray_keys(running: RunningBot, fake: FakeDiscord, user_id: int = MEMBER) -> list[str]:
    """Every row of the member's tray in the fake's server, expired or not."""
    rows = await running.storage.trays.tray(user_id, fake.guild_id, -1.0)
    return [row.key for row in rows]


# --- several images in one command ---------------------------------------------------------------


async def test_four_image_options_are_each_uploaded_and_sent_in_order(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    images = [png(n) for n in range(4)]
    attachments = [fake_discord.add_attachment(data, "image.png", "image/png") for data in images]
    options = dict(zip(("image", "image2", "image3", "image4"), attachments, strict=True))
    final = await final_answer(fake_discord, await imagine(fake_discord, **options))
    assert embed_title(final) == READY_TITLE
    assert field(final, "Options") == "auto · 1K · from 4 reference images"

    uploads = fake_kie.calls_to(UPLOAD)
    assert [call.json["fileUrl"] for call in uploads] == [a["url"] for a in attachments]
    assert len({call.json["uploadPath"] for call in uploads}) == 4, "no copy overwrote another"
    (create,) = fake_kie.calls_to(CREATE)
    assert create.json["model"] == IMAGE_TO_IMAGE_MODEL
    assert create.json["input"]["input_urls"] == [up.download_url for up in fake_kie.uploads]
    assert sent_images(fake_kie) == images, "every reference reached kie.ai, in order"
    job = await running.storage.jobs.get_job(1)
    assert job is not None and len(job.image.input_urls) == 4
    assert await running.units_charged() == 1


@pytest.mark.parametrize(
    ("bad_option", "with_good"), [("image2", True), ("image4", True), ("image3", False)]
)
async def test_an_unusable_extra_image_is_refused_naming_its_option(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    bad_option: str,
    with_good: bool,
) -> None:
    running = await start_bot()
    good = fake_discord.add_attachment(png(1), "cat.png", "image/png")
    bad = fake_discord.add_attachment(b"remember the milk", "notes.txt", "text/plain")
    options = {bad_option: bad, **({"image": good} if with_good else {})}
    interaction = await imagine(fake_discord, **options)
    answer = await final_answer(fake_discord, interaction)
    assert fake_discord.calls_for(interaction)[0] is answer and is_private(answer)
    text = answer_text(answer)
    assert text.startswith(f"`{bad_option}`: **notes.txt** is not an image")
    assert "Nothing was spent" in text
    assert fake_kie.calls == []
    assert await running.units_charged() == 0


# --- the tray ------------------------------------------------------------------------------------


async def test_use_as_reference_adds_a_messages_images_and_says_what_the_tray_holds(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    message_id = await fake_discord.send_message(
        "look",
        user_id=OTHER,
        mention_bot=False,
        files=[
            (png(1), "cat.png", "image/png"),
            (b"remember the milk", "notes.txt", "text/plain"),
            (png(2), "dog.png", "image/png"),
        ],
    )
    answer = answer_text(await use_as_reference(fake_discord, message_id))
    assert "Added 2 images to your reference tray: **cat.png**, **dog.png**." in answer
    assert "Not added: **notes.txt** (not a JPEG, PNG or WebP)." in answer
    assert "Your tray holds 2 of 8" in answer
    assert "an hour" in answer and "<t:" in answer

    again = answer_text(await use_as_reference(fake_discord, message_id))
    assert "Already in your tray: 2 images." in again
    assert "Added" not in again
    assert "Your tray holds 2 of 8" in again, "no duplicates"
    assert len(await tray_keys(running, fake_discord)) == 2
    assert await tray_keys(running, fake_discord, OTHER) == [], "the tray is the member's own"
    assert fake_kie.calls == [], "adding to the tray spends and uploads nothing"


async def test_a_message_without_images_leaves_the_tray_unchanged(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    message_id = await fake_discord.send_message(
        "look", user_id=OTHER, mention_bot=False, files=[(b"x" * 10, "notes.txt", "text/plain")]
    )
    answer = answer_text(await use_as_reference(fake_discord, message_id))
    assert "no image to use as a reference" in answer
    assert await tray_keys(running, fake_discord) == []


async def test_imagine_uses_the_tray_after_its_own_image_and_then_empties_it(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await use_as_reference(fake_discord, await post_images(fake_discord, png(1), png(2)))
    own = fake_discord.add_attachment(png(9), "mine.png", "image/png")
    final = await final_answer(fake_discord, await imagine(fake_discord, image=own))
    assert embed_title(final) == READY_TITLE
    assert field(final, "Options") == "auto · 1K · from 3 reference images"
    assert sent_images(fake_kie) == [png(9), png(1), png(2)], "own image first, then the tray"
    assert await tray_keys(running, fake_discord) == [], "emptied once admitted"

    final = await final_answer(fake_discord, await imagine(fake_discord))
    assert fake_kie.calls_to(CREATE)[-1].json["model"] == TEXT_TO_IMAGE_MODEL, "nothing left"
    assert field(final, "Options") == "1:1 · 1K"


async def test_the_tray_holds_at_most_eight_and_says_it_is_full(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await use_as_reference(fake_discord, await post_images(fake_discord, *map(png, range(5))))
    answer = answer_text(
        await use_as_reference(
            fake_discord, await post_images(fake_discord, *map(png, range(5, 9)))
        )
    )
    assert "Added 3 images" in answer
    assert "Your tray is full (8 images, the most one request can use): 1 not added." in answer
    assert "Your tray holds 8 of 8" in answer
    assert len(await tray_keys(running, fake_discord)) == 8

    final = await final_answer(fake_discord, await imagine(fake_discord))
    assert field(final, "Options") == "auto · 1K · from 8 reference images"
    assert sent_images(fake_kie) == [png(n) for n in range(8)]


async def test_more_than_eight_in_all_is_refused_and_the_tray_stays(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    await use_as_reference(fake_discord, await post_images(fake_discord, *map(png, range(7))))
    extra = [fake_discord.add_attachment(png(20 + n), "x.png", "image/png") for n in range(2)]
    interaction = await imagine(fake_discord, image=extra[0], image2=extra[1])
    answer = await final_answer(fake_discord, interaction)
    assert fake_discord.calls_for(interaction)[0] is answer and is_private(answer)
    text = answer_text(answer)
    assert "That is 9 reference images (2 from the `image` options, 7 from your reference" in text
    assert "at most 8" in text and "Nothing was spent" in text
    assert fake_kie.calls == []
    assert await running.units_charged() == 0
    assert len(await tray_keys(running, fake_discord)) == 7, "the tray is untouched"


async def test_a_request_refused_by_the_quota_keeps_the_tray(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(daily_quota=1)
    await use_as_reference(fake_discord, await post_images(fake_discord, png(1)))
    interaction = await imagine(fake_discord, resolution="2K")  # 2 units, over the quota
    answer = await final_answer(fake_discord, interaction)
    assert is_private(answer) and "Nothing was spent" in answer_text(answer)
    assert fake_kie.calls == []
    assert len(await tray_keys(running, fake_discord)) == 1, "a refusal leaves the tray"

    final = await final_answer(fake_discord, await imagine(fake_discord))
    assert embed_title(final) == READY_TITLE
    assert sent_images(fake_kie) == [png(1)]
    assert await tray_keys(running, fake_discord) == []


async def test_tray_images_expire_after_an_hour_and_are_purged(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    clock = FakeClock(1_700_000_000.0)
    running = await start_bot(clock=clock)
    await use_as_reference(fake_discord, await post_images(fake_discord, png(1)))
    clock.advance(3599)
    held = answer_text(
        await use_as_reference(fake_discord, await post_images(fake_discord, png(2)))
    )
    assert "Your tray holds 2 of 8" in held, "still there just before the hour"
    clock.advance(2)  # the first is now an hour and a second old

    final = await final_answer(fake_discord, await imagine(fake_discord))
    assert field(final, "Options") == "auto · 1K · from a reference image"
    assert sent_images(fake_kie) == [png(2)], "the expired image is ignored"

    clock.advance(3600)
    await use_as_reference(fake_discord, await post_images(fake_discord, png(3)))
    assert len(await tray_keys(running, fake_discord)) == 1, "expired rows are purged"


async def test_each_server_and_direct_messages_have_their_own_tray(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(allow_dms=True)
    await use_as_reference(fake_discord, await post_images(fake_discord, png(1)))
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT}, user_id=MEMBER, guild_id=None
    )
    final = await final_answer(fake_discord, interaction)
    assert field(final, "Options") == "1:1 · 1K", "the server's tray stays in the server"
    assert len(await tray_keys(running, fake_discord)) == 1


async def test_a_tray_job_waiting_in_line_survives_a_restart(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    first = await start_bot(max_running_per_member=1, poll_interval=0.15)
    fake_kie.script_next(SLOW)
    running_one = await imagine(fake_discord)
    # Answered, so it has read the (empty) tray: the images below are the second job's.
    await eventually(
        lambda: fake_discord.ack_latency(running_one) is not None, what="the first answer"
    )
    await use_as_reference(fake_discord, await post_images(fake_discord, png(1), png(2)))
    waiting = await imagine(fake_discord)
    await eventually(lambda: len(fake_kie.created_tasks()) == 1, what="the first job at kie.ai")

    async def charged() -> bool:
        job = await first.storage.jobs.get_job(2)
        return job is not None and job.state is JobState.RESERVED

    await eventually(charged, what="the tray's job to be charged and waiting")

    async def emptied() -> bool:  # the job holds the references now
        return await tray_keys(first, fake_discord) == []

    await eventually(emptied, what="the tray to be emptied")
    await first.bot.close()

    second = await start_bot(max_running_per_member=1, poll_interval=0.15)
    for interaction in (running_one, waiting):
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    assert sent_images(fake_kie) == [png(1), png(2)]
    assert len(fake_kie.calls_to(UPLOAD)) == 2, "each reference uploaded once"
    assert await second.job_states() == {"delivered": 2}
    assert await second.units_charged() == 2
    await nothing_else_happens(fake_discord)


async def test_a_job_restarted_between_two_uploads_uploads_only_the_missing_one(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, settings: Settings
) -> None:
    first, second = png(1), png(2)
    urls = tuple(
        fake_discord.add_attachment(data, "image.png", "image/png")["url"]
        for data in (first, second)
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake_kie.upload_base_url}/api/file-url-upload",
            json={"fileUrl": urls[0], "uploadPath": "imagine-bot/job-1"},
            headers={"Authorization": f"Bearer {fake_kie.api_key}"},
        ) as response,
    ):
        copied = (await response.json())["data"]["downloadUrl"]
    # A previous run charged the job, copied its first reference, and stopped.
    store = await open_storage(database_target(settings))
    try:
        image = ImageRequest(PROMPT, "auto", "1K", reference_urls=urls)
        reply = ReplyTarget(fake_discord.application_id, "expired-token", time.time(), 10 * 2**20)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        new = NewJob(MEMBER, fake_discord.guild_id, fake_discord.channel_id, day, 1, image, reply)
        job = await store.jobs.reserve(new, SpendLimits(10))
        assert not isinstance(job, OverLimit)
        await store.jobs.set_input_urls(job.id, (copied,))
    finally:
        await store.close()

    running = await start_bot()
    await eventually(lambda: len(fake_kie.created_tasks()) == 1, what="the resumed submission")
    assert await running.job_states() == {"delivered": 1}
    uploads = fake_kie.calls_to(UPLOAD)
    # The test's own copy of the first, then the bot's of the second: nothing twice.
    assert [call.json["fileUrl"] for call in uploads] == list(urls)
    (create,) = fake_kie.calls_to(CREATE)
    assert create.json["input"]["input_urls"][0] == copied
    assert sent_images(fake_kie) == [first, second]
