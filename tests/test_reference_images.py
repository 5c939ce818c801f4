"""/imagine with a reference image (the `image` option), end to end at the wire."""

from __future__ import annotations

import time
from typing import Any, Literal

import aiohttp
import pytest

from bot.__main__ import database_target
from bot.domain import ImageRequest, JobState, NewJob, ReplyTarget, SpendLimits
from bot.kie import IMAGE_TO_IMAGE_MODEL, REFERENCE_MAX_BYTES
from bot.settings import Settings
from bot.store import open_storage
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import I2I_RESULT_PNG, CreateFault, FakeKie, make_png
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    answer_text,
    embed_title,
    field,
    final_answer,
)

PROMPT = "the same cat, but as a watercolour"
MEMBER = 601
REFERENCE = make_png(6, 4, rgb=(10, 200, 90))
CREATE = "/api/v1/jobs/createTask"
UPLOAD = "/api/file-url-upload"


async def imagine_with(
    fake: FakeDiscord, attachment: dict[str, Any] | None, **options: Any
) -> FakeInteraction:
    values: dict[str, Any] = {"prompt": PROMPT, **options}
    if attachment is not None:
        values["image"] = attachment
    return await fake.send_interaction("imagine", values, user_id=MEMBER)


def uploads_sent(fake_kie: FakeKie) -> list[Any]:
    return [call for call in fake_kie.calls if call.path.startswith("/api/file-")]


def assert_refused_up_front(
    fake_discord: FakeDiscord, interaction: FakeInteraction, answer: RecordedRequest
) -> None:
    """Refused in the first response, privately: no public 'thinking…' reply came first."""
    first = fake_discord.calls_for(interaction)[0]
    assert first is answer, "the refusal is the very first answer (no defer, no charge)"
    assert answer.json["type"] == 4
    assert answer.json["data"]["flags"] & 64, "the refusal is ephemeral"
    assert "Nothing was spent" in answer_text(answer)


# --- the happy path ------------------------------------------------------------------------------


async def test_a_reference_image_is_uploaded_to_the_file_host_and_used_image_to_image(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    attachment = fake_discord.add_attachment(REFERENCE, "cat.png", "image/png")
    interaction = await imagine_with(fake_discord, attachment)
    final = await final_answer(fake_discord, interaction)
    assert embed_title(final) == READY_TITLE

    (upload_call,) = fake_kie.calls_to(UPLOAD)
    assert upload_call.headers["authorization"] == f"Bearer {fake_kie.api_key}"
    assert upload_call.json["fileUrl"] == attachment["url"]
    assert upload_call.json["uploadPath"]
    (upload,) = fake_kie.uploads
    assert upload.data == REFERENCE, "the file host fetched the member's attachment"

    (create,) = fake_kie.calls_to(CREATE)
    assert create.json["model"] == IMAGE_TO_IMAGE_MODEL
    assert create.json["input"] == {
        "prompt": PROMPT,
        "aspect_ratio": "auto",
        "resolution": "1K",
        "input_urls": [upload.download_url],
        "nsfw_checker": True,
    }
    (task,) = fake_kie.created_tasks()
    assert task.input_images == [REFERENCE], "kie.ai could fetch the uploaded copy"

    (sent,) = final.files
    assert sent.data == I2I_RESULT_PNG, "the image-to-image result is what was delivered"
    assert field(final, "Options") == "auto · 1K · from a reference image"
    await running.idle()
    job = await running.storage.jobs.get_job(1)
    assert job is not None
    assert (job.image.reference_urls, job.image.input_urls) == (
        (attachment["url"],),
        (upload.download_url,),
    )
    assert job.state is JobState.DELIVERED
    assert await running.units_charged() == 1


async def test_two_members_with_the_same_file_name_get_their_own_reference(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot()
    first_image, second_image = make_png(rgb=(1, 2, 3)), make_png(rgb=(200, 100, 50))
    first = await fake_discord.send_interaction(
        "imagine",
        {"prompt": PROMPT, "image": fake_discord.add_attachment(first_image, "image.png")},
        user_id=1,
    )
    second = await fake_discord.send_interaction(
        "imagine",
        {"prompt": PROMPT, "image": fake_discord.add_attachment(second_image, "image.png")},
        user_id=2,
    )
    for interaction in (first, second):
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE
    paths = {call.json["uploadPath"] for call in fake_kie.calls_to(UPLOAD)}
    assert len(paths) == 2, "a folder per job"
    inputs = sorted(task.input_images[0] for task in fake_kie.created_tasks())
    assert inputs == sorted([first_image, second_image]), "no upload overwrote the other"


@pytest.mark.parametrize("ratio", ["16:9", "2:3"])
async def test_an_explicit_aspect_ratio_with_an_image_is_kept(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, ratio: str
) -> None:
    await start_bot()
    attachment = fake_discord.add_attachment(REFERENCE, "cat.png", "image/png")
    interaction = await imagine_with(fake_discord, attachment, aspect_ratio=ratio)
    final = await final_answer(fake_discord, interaction)
    assert embed_title(final) == READY_TITLE
    (create,) = fake_kie.calls_to(CREATE)
    assert create.json["model"] == IMAGE_TO_IMAGE_MODEL
    assert create.json["input"]["aspect_ratio"] == ratio
    assert field(final, "Options").startswith(f"{ratio} · ")


@pytest.mark.parametrize(
    ("content_type", "filename"),
    [("image/jpeg", "photo.jpg"), ("image/webp", "photo.webp"), (None, "photo.png")],
)
async def test_jpeg_webp_and_an_undeclared_png_are_accepted(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    content_type: str | None,
    filename: str,
) -> None:
    await start_bot()
    # The bytes stay a PNG: only what Discord reports about the upload is under test here.
    attachment = fake_discord.add_attachment(REFERENCE, filename, content_type)
    final = await final_answer(fake_discord, await imagine_with(fake_discord, attachment))
    assert embed_title(final) == READY_TITLE
    assert len(fake_kie.calls_to(UPLOAD)) == 1


# --- refused before anything is spent ------------------------------------------------------------


async def test_auto_without_an_image_is_refused_privately_and_nothing_reaches_kie_ai(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    interaction = await imagine_with(fake_discord, None, aspect_ratio="auto")
    answer = await final_answer(fake_discord, interaction)
    assert_refused_up_front(fake_discord, interaction, answer)
    assert "`image` option" in answer_text(answer)
    assert fake_kie.calls == []
    assert await running.job_states() == {}
    assert await running.units_charged() == 0


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "says"),
    [
        (b"remember the milk\n", "notes.txt", "text/plain", "notes.txt** is not an image"),
        (b"GIF89a" + b"\0" * 64, "dance.gif", "image/gif", "is not an image"),
        (b"\0" * 64, "notes", None, "is not an image"),
        (
            REFERENCE + b"\0" * (REFERENCE_MAX_BYTES + 1 - len(REFERENCE)),
            "huge.png",
            "image/png",
            "is 10.0 MB; the generator takes at most 10 MB",
        ),
    ],
    ids=["text", "gif", "no-type-no-extension", "over-10-MB"],
)
async def test_an_unusable_attachment_is_refused_privately_before_anything_is_spent(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    data: bytes,
    filename: str,
    content_type: str | None,
    says: str,
) -> None:
    running = await start_bot()
    attachment = fake_discord.add_attachment(data, filename, content_type)
    assert attachment["size"] == len(data)
    interaction = await imagine_with(fake_discord, attachment)
    answer = await final_answer(fake_discord, interaction)
    assert_refused_up_front(fake_discord, interaction, answer)
    assert says in answer_text(answer)
    assert answer.json["data"]["allowed_mentions"] == {"parse": []}
    assert fake_kie.calls == [], "no upload, no createTask"
    assert await running.job_states() == {}
    assert await running.units_charged() == 0


async def test_an_image_of_exactly_10_mb_is_accepted(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    # The limit is inclusive; the fake's kie.ai reads "10 MB" as 10,000,000 bytes, so it is
    # told to accept what the bot accepts: only the bot's own boundary is under test.
    fake_kie.input_image_max_bytes = REFERENCE_MAX_BYTES
    await start_bot()
    data = REFERENCE + b"\0" * (REFERENCE_MAX_BYTES - len(REFERENCE))
    attachment = fake_discord.add_attachment(data, "big.png", "image/png")
    final = await final_answer(fake_discord, await imagine_with(fake_discord, attachment))
    assert embed_title(final) == READY_TITLE
    assert len(fake_kie.uploads[0].data) == REFERENCE_MAX_BYTES


# --- the file host fails -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        CreateFault(code=500, msg="Internal server error"),
        CreateFault(code=400, msg="Failed to download file"),
        CreateFault(code=200, drop_connection=True),
        CreateFault(code=200, body="<html>502 Bad Gateway</html>", http_status=502),
    ],
    ids=["500", "400", "dropped", "html-502"],
)
async def test_a_failed_upload_refunds_and_says_the_reference_could_not_be_used(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, fault: CreateFault
) -> None:
    running = await start_bot()
    fake_kie.fail_upload_next(fault)
    attachment = fake_discord.add_attachment(REFERENCE, "cat.png", "image/png")
    final = await final_answer(fake_discord, await imagine_with(fake_discord, attachment))
    assert embed_title(final) == FAILED_TITLE
    assert "could not use the reference image" in field(final, "What happened")
    assert "1 unit went back" in field(final, "Quota")
    assert final.files == []
    assert len(fake_kie.calls_to(UPLOAD)) == 1, "not retried blindly"
    assert fake_kie.calls_to(CREATE) == [], "nothing was sent to createTask"
    assert await running.job_states() == {"refunded": 1}
    assert await running.units_charged() == 0


@pytest.mark.parametrize(
    "rejection",
    [
        "create",
        "task",
    ],
)
async def test_a_file_that_only_claims_to_be_an_image_is_refunded_naming_the_reference(
    start_bot: StartBot,
    fake_discord: FakeDiscord,
    fake_kie: FakeKie,
    rejection: Literal["create", "task"],
) -> None:
    # Discord reports the type from the name, so a renamed text file arrives as image/png;
    # only kie.ai, fetching it, finds out. Where kie.ai says so (at createTask or in the
    # task) is undocumented: the fake's `input_rejection` plays both.
    fake_kie.input_rejection = rejection
    running = await start_bot()
    attachment = fake_discord.add_attachment(b"just some text", "cat.png", "image/png")
    final = await final_answer(fake_discord, await imagine_with(fake_discord, attachment))
    assert embed_title(final) == FAILED_TITLE
    assert "1 unit went back" in field(final, "Quota")
    assert await running.units_charged() == 0
    what = field(final, "What happened")
    assert "reference image" in what or "not a JPEG, PNG or WebP" in what, what


# --- restarts ------------------------------------------------------------------------------------


async def _upload_directly(fake_kie: FakeKie, data_url: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake_kie.upload_base_url}/api/file-url-upload",
            json={"fileUrl": data_url, "uploadPath": "imagine-bot/job-1"},
            headers={"Authorization": f"Bearer {fake_kie.api_key}"},
        ) as response,
    ):
        return (await response.json())["data"]["downloadUrl"]


async def _seed_reserved_job(
    settings: Settings, fake_discord: FakeDiscord, reference_url: str, input_url: str | None = None
) -> int:
    """A job a previous run charged (and maybe uploaded the reference for) but never sent."""
    store = await open_storage(database_target(settings))
    try:
        reply = ReplyTarget(fake_discord.application_id, "expired-token", time.time() - 1200, 2**23)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        job = await store.jobs.reserve(
            NewJob(
                MEMBER,
                fake_discord.guild_id,
                fake_discord.channel_id,
                day,
                1,
                ImageRequest(
                    PROMPT,
                    "auto",
                    "1K",
                    reference_urls=(reference_url,),
                    input_urls=(input_url,) if input_url else (),
                ),
                reply,
            ),
            SpendLimits(10),
        )
        assert not isinstance(job, str) and job is not None
        return job.id
    finally:
        await store.close()


async def test_after_a_restart_a_stored_upload_is_used_and_not_repeated(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, settings: Settings
) -> None:
    attachment = fake_discord.add_attachment(REFERENCE, "cat.png", "image/png")
    input_url = await _upload_directly(fake_kie, attachment["url"])
    # The previous run uploaded the reference and stored the copy's URL, then stopped.
    await _seed_reserved_job(
        settings, fake_discord, reference_url=attachment["url"], input_url=input_url
    )
    running = await start_bot()
    await fake_kie.wait_for_tasks(1)
    await running.idle()
    assert len(fake_kie.calls_to(UPLOAD)) == 1, "only the previous run's upload"
    (create,) = fake_kie.calls_to(CREATE)
    assert create.json["input"]["input_urls"] == [input_url]
    assert create.json["model"] == IMAGE_TO_IMAGE_MODEL
    assert await running.job_states() == {"delivered": 1}


async def test_after_a_restart_a_reference_not_yet_uploaded_is_uploaded_once(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, settings: Settings
) -> None:
    attachment = fake_discord.add_attachment(REFERENCE, "cat.png", "image/png")
    await _seed_reserved_job(settings, fake_discord, reference_url=attachment["url"])
    running = await start_bot()
    await fake_kie.wait_for_tasks(1)
    await running.idle()
    (upload,) = fake_kie.uploads
    (create,) = fake_kie.calls_to(CREATE)
    assert create.json["input"]["input_urls"] == [upload.download_url]
    job = await running.storage.jobs.get_job(1)
    assert job is not None and job.image.input_urls == (upload.download_url,)
    assert await running.job_states() == {"delivered": 1}
    posted = fake_discord.channel_messages[fake_discord.channel_id]
    assert [m["embeds"][0]["title"] for m in posted] == [READY_TITLE]
    assert "reference image" in embed_of_message(posted[0], "Options")


def embed_of_message(message: dict[str, Any], name: str) -> str:
    for item in message["embeds"][0].get("fields", []):
        if item["name"] == name:
            return str(item["value"])
    raise AssertionError(f"no field {name!r}")
