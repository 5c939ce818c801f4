"""The Edit button: a Discord form prefilled with a result's prompt and options, whose
submission runs the edited request as a new image, at the wire against the real bot. Also the
options line's forgiving syntax, and the fake Discord's modals."""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain import ImageRequest, JobState, Origin
from bot.kie import PRO_TEXT_TO_IMAGE_MODEL, TEXT_TO_IMAGE_MODEL
from bot.options import OptionKey, OptionsError, Problem, format_options, parse_options
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.discord_server.records import DEFAULT_GUILD_ID
from tests.fakes.discord_server.validation import _modal_problems
from tests.fakes.kie_server import FakeKie
from tests.helpers import (
    admin_command,
    answer_text,
    embed_title,
    field,
    final_answer,
    first_answer_is_private,
    is_private,
    nothing_else_happens,
)
from tests.test_results import (
    EVERYONE,
    OTHER,
    REQUESTER,
    custom_ids,
    deliver,
    outcome,
    post_forged_result,
)

EDITED_TITLE = "🖼️ ✏️ Edited image is ready"
NEW_PROMPT = "a blue kite over a lighthouse, watercolour"


def modal_of(fake: FakeDiscord, press: FakeInteraction) -> dict[str, Any]:
    """The modal the bot answered a press with (callback type 9)."""
    (callback,) = [r for r in fake.calls_for(press) if r.path.endswith("/callback")]
    assert callback.json["type"] == 9, callback.json
    return dict(callback.json["data"])


def inputs_of(modal: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["custom_id"]: item for row in modal["components"] for item in row["components"]}


async def open_form(
    fake: FakeDiscord, message: dict[str, Any], *, user_id: int = REQUESTER, job_id: int = 1
) -> FakeInteraction:
    press = await fake.press_button(
        message["id"], f"imagine:edit:{job_id}", user_id=user_id, permissions=EVERYONE
    )
    await fake.wait_for_request(lambda r: r.path.endswith("/callback") and str(press.id) in r.path)
    return press


async def charged(running: RunningBot, user_id: int) -> int:
    await running.idle()
    day = running.bot.quota.today()
    return (await running.storage.jobs.usage(user_id, DEFAULT_GUILD_ID, day)).used


# --- the form -------------------------------------------------------------------------------------


async def test_edit_opens_a_form_prefilled_with_the_prompt_and_options_and_spends_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running, aspect_ratio="16:9", resolution="2K")
    press = await open_form(fake_discord, message, user_id=OTHER)
    modal = modal_of(fake_discord, press)
    assert modal["custom_id"] == "imagine:edit:1"
    assert modal["title"] == "Edit and run again"
    fields = inputs_of(modal)
    prompt, options = fields["prompt"], fields["options"]
    assert (prompt["style"], prompt["value"], prompt["max_length"]) == (
        2,
        "a red kite over a windmill, gouache",
        4000,
    )
    assert prompt["min_length"] == 3
    assert (options["style"], options["value"]) == (1, "ar 16:9, res 2K, model flex")
    assert options["required"] is False
    assert "ar 16:9, res 2K, model pro" in options["placeholder"]
    await nothing_else_happens(fake_discord, fake_kie)
    assert len(fake_kie.created_tasks()) == 1
    assert await charged(running, OTHER) == 0


async def test_a_submitted_edit_runs_as_a_new_reply_charged_to_whoever_submitted_it(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(cost_pro_1k=3)
    _, _, message = await deliver(fake_discord, running, aspect_ratio="16:9", resolution="2K")
    press = await open_form(fake_discord, message, user_id=OTHER)
    submitted = await fake_discord.submit_modal(
        press, {"prompt": f"  {NEW_PROMPT} ", "options": "AR 4x3; res=1k model:pro"}
    )
    result = await outcome(fake_discord, submitted)

    assert fake_discord.calls_for(submitted)[0].json == {"type": 5}, "a public 'thinking…'"
    assert embed_title(result) == EDITED_TITLE
    assert field(result, "Options") == "4:3 · 1K"
    assert field(result, "Model") == "Flux-2 pro"
    assert field(result, "Requested by") == f"<@{OTHER}>"
    original, edited = (call.json for call in fake_kie.calls_to("/api/v1/jobs/createTask"))
    assert original["model"] == TEXT_TO_IMAGE_MODEL
    assert edited["model"] == PRO_TEXT_TO_IMAGE_MODEL
    assert edited["input"] == {
        "prompt": NEW_PROMPT,
        "aspect_ratio": "4:3",
        "resolution": "1K",
        "nsfw_checker": True,
    }
    reply = fake_discord.original_message(submitted)
    assert reply is not None and reply["id"] != message["id"], "a new message"
    assert reply["message_reference"]["message_id"] == message["id"]
    kept = fake_discord.message(message["id"])
    assert kept is not None and kept["attachments"] == message["attachments"], "first stays"

    assert await charged(running, OTHER) == 3
    assert await charged(running, REQUESTER) == 2
    child = await running.storage.jobs.get_job(2)
    assert child is not None
    assert (child.origin, child.parent_job_id, child.user_id) == (Origin.EDIT, 1, OTHER)
    assert (child.image.prompt, child.image.model, child.state) == (
        NEW_PROMPT,
        "pro",
        JobState.DELIVERED,
    )
    assert custom_ids(reply)[:3] == ["imagine:reroll:2", "imagine:vary:2", "imagine:edit:2"]

    # The edited image's own form starts from the edit.
    again = await open_form(fake_discord, reply, user_id=REQUESTER, job_id=2)
    fields = inputs_of(modal_of(fake_discord, again))
    assert (fields["prompt"]["value"], fields["options"]["value"]) == (
        NEW_PROMPT,
        "ar 4:3, res 1K, model pro",
    )


async def test_options_left_out_keep_the_originals_and_an_empty_line_changes_only_the_prompt(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running, aspect_ratio="9:16")
    press = await open_form(fake_discord, message)
    submitted = await fake_discord.submit_modal(press, {"prompt": NEW_PROMPT, "options": ""})
    result = await outcome(fake_discord, submitted)
    assert embed_title(result) == EDITED_TITLE
    assert field(result, "Options") == "9:16 · 1K"
    edited = fake_kie.calls_to("/api/v1/jobs/createTask")[1].json
    assert (edited["model"], edited["input"]["prompt"]) == (TEXT_TO_IMAGE_MODEL, NEW_PROMPT)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ("ar 5:4", "**5:4** is not a shape (ar) the bot offers"),
        ("res 4K", "**4K** is not a resolution (res) the bot offers"),
        ("model ultra", "**ultra** is not a model the bot offers"),
        ("ar 16:9 banana", "**banana**, which is no option the bot knows"),
        ("res", "**res** needs a value after it"),
        ("ar 1:1, ar 16:9", "give the shape (ar) twice"),
        ("ar auto", "`ar auto` matches a reference image"),
    ],
)
async def test_options_the_bot_cannot_read_are_refused_privately_and_change_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie, options: str, says: str
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running)
    press = await open_form(fake_discord, message)
    submitted = await fake_discord.submit_modal(press, {"options": options})
    answer = await final_answer(fake_discord, submitted)
    assert is_private(answer) and first_answer_is_private(fake_discord, submitted)
    assert says in answer_text(answer)
    assert "Nothing was spent" in answer_text(answer)
    if "twice" not in says and "auto" not in says:
        assert "ar 16:9, res 2K, model pro" in answer_text(answer), "shows how to write them"
    await nothing_else_happens(fake_discord, fake_kie)
    assert len(fake_kie.created_tasks()) == 1
    assert await charged(running, REQUESTER) == 1
    assert await running.storage.jobs.get_job(2) is None


async def test_an_edited_prompt_meets_the_blocklist_and_the_quota_like_imagine(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(daily_quota=3)
    await admin_command(fake_discord, "moderation", "block", {"term": "gore"})
    _, _, message = await deliver(fake_discord, running)

    press = await open_form(fake_discord, message)
    blocked = await fake_discord.submit_modal(press, {"prompt": "a kite, lots of g0re"})
    refusal = await final_answer(fake_discord, blocked)
    assert is_private(refusal) and first_answer_is_private(fake_discord, blocked)
    assert "gore" in answer_text(refusal) and "Nothing was spent" in answer_text(refusal)

    press = await open_form(fake_discord, message)
    too_dear = await fake_discord.submit_modal(press, {"options": "res 2K, model flex"})
    assert embed_title(await outcome(fake_discord, too_dear)) == EDITED_TITLE  # 1 + 2 of 3
    await running.idle()
    press = await open_form(fake_discord, message)
    over = await fake_discord.submit_modal(press, {"options": "res 1K"})
    refusal = await final_answer(fake_discord, over)
    assert is_private(refusal) and "resets <t:" in answer_text(refusal)
    assert len(fake_kie.created_tasks()) == 2
    assert await charged(running, REQUESTER) == 3


async def test_a_prompt_too_long_for_a_discord_form_is_not_opened_but_explained(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    long_prompt = "a very detailed scene, " * 200  # 4600 characters: /imagine takes 5000
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": long_prompt.strip()}, user_id=REQUESTER
    )
    await final_answer(fake_discord, interaction)
    await running.idle()
    message = fake_discord.original_message(interaction)
    assert message is not None
    press = await fake_discord.press_button(message["id"], "imagine:edit:1", user_id=REQUESTER)
    answer = await final_answer(fake_discord, press)
    assert is_private(answer)
    assert "4000" in answer_text(answer) and "/imagine" in answer_text(answer)


async def test_a_form_opened_before_a_restart_still_works_after_it(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    first = await start_bot()
    _, _, message = await deliver(fake_discord, first)
    press = await open_form(fake_discord, message)
    await first.bot.close()

    second = await start_bot()
    submitted = await fake_discord.submit_modal(press, {"prompt": NEW_PROMPT})
    result = await outcome(fake_discord, submitted)
    assert embed_title(result) == EDITED_TITLE
    await second.idle()
    child = await second.storage.jobs.get_job(2)
    assert child is not None and (child.origin, child.image.prompt) == (Origin.EDIT, NEW_PROMPT)


async def test_edit_on_a_result_the_bot_does_not_know_answers_privately(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot()
    message_id = await post_forged_result(fake_discord, "imagine:edit:999")
    press = await fake_discord.press_button(message_id, "imagine:edit:999")
    answer = await final_answer(fake_discord, press)
    assert is_private(answer) and "no record of this image" in answer_text(answer)
    await nothing_else_happens(fake_discord, fake_kie)
    assert fake_kie.created_tasks() == []


async def test_re_roll_of_an_edit_keeps_the_edit(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running)
    press = await open_form(fake_discord, message)
    submitted = await fake_discord.submit_modal(press, {"options": "model pro, ar 3:2"})
    await outcome(fake_discord, submitted)
    await running.idle()
    reply = fake_discord.original_message(submitted)
    assert reply is not None
    reroll = await fake_discord.press_button(reply["id"], "imagine:reroll:2", user_id=REQUESTER)
    await outcome(fake_discord, reroll)
    last = fake_kie.calls_to("/api/v1/jobs/createTask")[-1].json
    assert (last["model"], last["input"]["aspect_ratio"]) == (PRO_TEXT_TO_IMAGE_MODEL, "3:2")


# --- the options line -----------------------------------------------------------------------------

CURRENT = ImageRequest("a fox", "16:9", "2K", "flex")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("16:9", "2K", "flex")),
        ("ar 16:9, res 2K, model pro", ("16:9", "2K", "pro")),
        ("ar:4:3 res=1k MODEL=Pro", ("4:3", "1K", "pro")),
        ("ar: 9:16; size 1K", ("9:16", "1K", "flex")),
        ("2x3 pro", ("2:3", "2K", "pro")),
        ("aspect 3 / 2", ("3:2", "2K", "flex")),
        ("  1k  ", ("16:9", "1K", "flex")),
        ("ratio 1:1,resolution 2k,model flex", ("1:1", "2K", "flex")),
        ("ar 16:9, 16:9", ("16:9", "2K", "flex")),
        ("ar auto", ("auto", "2K", "flex")),
    ],
)
def test_the_options_line_is_forgiving(text: str, expected: tuple[str, str, str]) -> None:
    parsed = parse_options(text, CURRENT)
    assert isinstance(parsed, ImageRequest), parsed
    assert (parsed.aspect_ratio, parsed.resolution, parsed.model) == expected
    assert parsed.prompt == "a fox"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("ar 5:4", OptionsError(Problem.BAD_VALUE, "5:4", OptionKey.ASPECT_RATIO)),
        ("model", OptionsError(Problem.MISSING_VALUE, "model", OptionKey.MODEL)),
        ("res 1K res 2K", OptionsError(Problem.TWICE, "2K", OptionKey.RESOLUTION)),
        ("hd", OptionsError(Problem.UNKNOWN, "hd")),
        ("seed 4", OptionsError(Problem.UNKNOWN, "seed")),
    ],
)
def test_the_options_line_says_what_it_did_not_understand(text: str, error: OptionsError) -> None:
    assert parse_options(text, CURRENT) == error


@pytest.mark.parametrize(
    "image",
    [CURRENT, ImageRequest("x", "auto", "1K", "pro"), ImageRequest("y")],
)
def test_formatted_options_read_back_as_the_same_options(image: ImageRequest) -> None:
    assert parse_options(format_options(image), ImageRequest("other")) == ImageRequest(
        "other", image.aspect_ratio, image.resolution, image.model
    )


# --- the fake Discord's modals --------------------------------------------------------------------


def _text_input(**changes: Any) -> dict[str, Any]:
    return {"type": 4, "custom_id": "a", "style": 1, "label": "A", **changes}


@pytest.mark.parametrize(
    ("modal", "path"),
    [
        ({"custom_id": "m", "title": "t" * 46, "components": []}, "title"),
        ({"custom_id": "", "title": "t", "components": []}, "custom_id"),
        ({"custom_id": "m", "title": "t", "components": []}, "components"),
        (
            {"custom_id": "m", "title": "t", "components": [{"type": 1, "components": []}]},
            "components",
        ),
        (
            {
                "custom_id": "m",
                "title": "t",
                "components": [{"type": 1, "components": [_text_input(value="v" * 4001)]}],
            },
            "value",
        ),
        (
            {
                "custom_id": "m",
                "title": "t",
                "components": [{"type": 1, "components": [_text_input(max_length=4001)]}],
            },
            "max_length",
        ),
        (
            {
                "custom_id": "m",
                "title": "t",
                "components": [{"type": 1, "components": [_text_input(label="l" * 46)]}],
            },
            "label",
        ),
        (
            {
                "custom_id": "m",
                "title": "t",
                "components": [{"type": 1, "components": [_text_input(placeholder="p" * 101)]}],
            },
            "placeholder",
        ),
    ],
)
def test_the_fake_refuses_modals_discord_refuses(modal: dict[str, Any], path: str) -> None:
    problems = _modal_problems(modal)
    assert problems and path in problems[0][0]


def test_the_fake_accepts_a_modal_with_labels_too() -> None:
    label = {"type": 18, "label": "Prompt", "component": _text_input(label=None)}
    label["component"].pop("label")
    assert _modal_problems({"custom_id": "m", "title": "t", "components": [label]}) == []


async def test_a_modal_can_be_submitted_once_with_what_its_inputs_allow(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running)
    press = await open_form(fake_discord, message)
    with pytest.raises(ValueError, match="required"):
        await fake_discord.submit_modal(press, {"prompt": ""})
    with pytest.raises(ValueError, match="under 3"):
        await fake_discord.submit_modal(press, {"prompt": "ab"})
    with pytest.raises(ValueError, match="no input"):
        await fake_discord.submit_modal(press, {"seed": "4"})
    submitted = await fake_discord.submit_modal(press)
    result: RecordedRequest = await outcome(fake_discord, submitted)
    assert embed_title(result) == EDITED_TITLE
    with pytest.raises(ValueError, match="already submitted"):
        await fake_discord.submit_modal(press)
    with pytest.raises(ValueError, match="no modal"):
        await fake_discord.submit_modal(submitted)
