"""Models: /imagine model:flex|pro, the server's default (/server model), what each costs, and
that the model travels with the job: to kie.ai, into the ledger, into results and /history, and
through Re-roll and Vary."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.domain import ImageRequest, Model
from bot.kie import (
    IMAGE_TO_IMAGE_MODEL,
    PRO_IMAGE_TO_IMAGE_MODEL,
    PRO_TEXT_TO_IMAGE_MODEL,
    TEXT_TO_IMAGE_MODEL,
)
from bot.kie.models import model_for
from bot.store.database import Database
from bot.store.jobs import SqlJobLedger
from bot.store.migrations import MIGRATIONS
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.discord_server.records import DEFAULT_GUILD_ID
from tests.fakes.kie_server import CreateFault, FakeKie
from tests.helpers import (
    ADMIN_PERMISSIONS,
    READY_TITLE,
    admin_command,
    answer_text,
    embed_of,
    embed_title,
    field,
    final_answer,
    history_options,
    is_private,
)

PROMPT = "a paper boat on a puddle, macro"
MEMBER = 6161


def created_models(fake_kie: FakeKie) -> list[str]:
    return [call.json["model"] for call in fake_kie.calls_to("/api/v1/jobs/createTask")]


async def imagine(fake: FakeDiscord, **options: Any) -> tuple[FakeInteraction, RecordedRequest]:
    interaction = await fake.send_interaction(
        "imagine", {"prompt": PROMPT, **options}, user_id=MEMBER
    )
    return interaction, await final_answer(fake, interaction)


async def used_today(running: RunningBot) -> int:
    await running.idle()
    day = running.bot.quota.today()
    usage = await running.storage.jobs.usage(MEMBER, DEFAULT_GUILD_ID, day)
    return usage.used


@pytest.mark.parametrize(
    ("model", "references", "expected"),
    [
        ("flex", (), TEXT_TO_IMAGE_MODEL),
        ("flex", ("https://files.example/a.png",), IMAGE_TO_IMAGE_MODEL),
        ("pro", (), PRO_TEXT_TO_IMAGE_MODEL),
        ("pro", ("https://files.example/a.png",), PRO_IMAGE_TO_IMAGE_MODEL),
    ],
)
def test_each_model_and_kind_has_its_kie_name(
    model: Model, references: tuple[str, ...], expected: str
) -> None:
    request = ImageRequest(PROMPT, model=model, reference_urls=references, input_urls=references)
    assert model_for(request) == expected


async def test_imagine_with_model_pro_asks_kie_for_pro_charges_its_cost_and_says_so(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(cost_pro_1k=3, cost_pro_2k=4)
    _, final = await imagine(fake_discord, model="pro")
    assert embed_title(final) == READY_TITLE
    assert field(final, "Model") == "Flux-2 pro"
    assert created_models(fake_kie) == [PRO_TEXT_TO_IMAGE_MODEL]
    assert await used_today(running) == 3
    assert field(final, "Quota left today") == "7 of 10"

    _, final = await imagine(fake_discord, model="pro", resolution="2K")
    assert await used_today(running) == 7
    job = await running.storage.jobs.get_job(2)
    assert job is not None and (job.image.model, job.units) == ("pro", 4)

    _, final = await imagine(fake_discord, model="flex")
    assert field(final, "Model") == "Flux-2 flex"
    assert created_models(fake_kie)[-1] == TEXT_TO_IMAGE_MODEL
    assert await used_today(running) == 8

    history = await fake_discord.send_interaction("history", history_options(), user_id=MEMBER)
    listed = [f["value"] for f in embed_of(await final_answer(fake_discord, history))["fields"]]
    assert ["Flux-2 flex" in listed[0], "Flux-2 pro" in listed[1], "Flux-2 pro" in listed[2]] == [
        True,
        True,
        True,
    ]


async def test_without_a_model_imagine_uses_flex(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, final = await imagine(fake_discord)
    assert field(final, "Model") == "Flux-2 flex"
    assert created_models(fake_kie) == [TEXT_TO_IMAGE_MODEL]
    assert await used_today(running) == 1


async def test_a_failed_pro_image_gives_back_exactly_its_units(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot(cost_pro_2k=5)
    fake_kie.fail_create_next(CreateFault(code=500, msg="boom"))
    _, final = await imagine(fake_discord, model="pro", resolution="2K")
    assert "5 units went back" in field(final, "Quota")
    assert await used_today(running) == 0


async def test_a_server_chooses_its_default_model_audited_and_shown_in_its_settings(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot()
    audit = fake_discord.channel_id
    channel = {"id": str(audit), "type": 0, "name": "audit", "permissions": ADMIN_PERMISSIONS}
    await admin_command(
        fake_discord,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit)}},
        resolved={"channels": {str(audit): channel}},
    )
    before = await admin_command(fake_discord, "server", "settings")
    assert field(before, "Default model").startswith("flex (the bot's default)")

    answer = await admin_command(fake_discord, "server", "model", {"model": "pro"})
    assert is_private(answer)
    assert field(answer, "Default model").startswith("pro ·")
    assert "default model: pro" in field(answer, "Latest changes")
    posted = await fake_discord.wait_for_request(
        lambda r: r.path == f"/channels/{audit}/messages" and embed_title(r) == "⚙️ Setting changed"
    )
    assert field(posted, "Details") == "default model: pro"

    _, final = await imagine(fake_discord)
    assert field(final, "Model") == "Flux-2 pro"
    _, final = await imagine(fake_discord, model="flex")  # the member's choice wins
    assert field(final, "Model") == "Flux-2 flex"
    # Another server keeps the bot's default.
    elsewhere = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT}, user_id=MEMBER, guild_id=fake_discord.guild_id + 1
    )
    assert field(await final_answer(fake_discord, elsewhere), "Model") == "Flux-2 flex"
    assert created_models(fake_kie) == [
        PRO_TEXT_TO_IMAGE_MODEL,
        TEXT_TO_IMAGE_MODEL,
        TEXT_TO_IMAGE_MODEL,
    ]

    back = await admin_command(fake_discord, "server", "model")
    assert field(back, "Default model").startswith("flex (the bot's default)")
    _, final = await imagine(fake_discord)
    assert field(final, "Model") == "Flux-2 flex"


async def test_only_server_managers_may_choose_the_default_model(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    answer = await admin_command(
        fake_discord, "server", "model", {"model": "pro"}, user_id=MEMBER, permissions="0"
    )
    assert is_private(answer)
    assert "manage" in answer_text(answer)
    policy = await running.storage.settings.server_policy(fake_discord.guild_id)
    assert policy.default_model is None


async def test_a_forged_model_is_refused_privately_and_spends_nothing(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, answer = await imagine(fake_discord, model="ultra")
    assert is_private(answer) and "Nothing was spent" in answer_text(answer)
    assert fake_kie.created_tasks() == []
    assert await used_today(running) == 0
    refused = await admin_command(fake_discord, "server", "model", {"model": "ultra"})
    assert is_private(refused) and "not one the bot offers" in answer_text(refused)


async def test_re_roll_and_vary_keep_the_original_jobs_model(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    interaction, _ = await imagine(fake_discord, model="pro")
    await running.idle()
    message = fake_discord.original_message(interaction)
    assert message is not None
    for action in ("reroll", "vary"):
        press = await fake_discord.press_button(
            message["id"], f"imagine:{action}:1", user_id=MEMBER
        )

        def shows_result(request: RecordedRequest, press: FakeInteraction = press) -> bool:
            return (
                request.method == "PATCH"
                and press.token in request.path
                and (embed_title(request).endswith(" is ready"))
            )

        result = await fake_discord.wait_for_request(shows_result, 15)
        assert field(result, "Model") == "Flux-2 pro"
    await running.idle()
    assert created_models(fake_kie) == [
        PRO_TEXT_TO_IMAGE_MODEL,
        PRO_TEXT_TO_IMAGE_MODEL,
        PRO_IMAGE_TO_IMAGE_MODEL,
    ]


async def test_jobs_from_before_models_were_flex(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    database = await Database.open(path, migrations=MIGRATIONS[:9])
    await database.close()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO jobs (user_id, guild_id, day, units, prompt, aspect_ratio, resolution,"
            " state, created_at, updated_at) VALUES (1, 2, '2026-01-01', 1, 'old prompt', '1:1',"
            " '1K', 'delivered', 0, 0)"
        )
        db.execute("INSERT INTO guild_settings (guild_id, daily_quota) VALUES (2, 5)")
    database = await Database.open(path)
    try:
        job = await SqlJobLedger(database).get_job(1)
        assert job is not None and job.image.model == "flex"
    finally:
        await database.close()


async def test_quota_shows_what_each_model_costs(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot(cost_2k=3, cost_pro_1k=2, cost_pro_2k=4)
    interaction = await fake_discord.send_interaction("quota", user_id=MEMBER)
    text = answer_text(await final_answer(fake_discord, interaction))
    assert "A 1K image costs 1 unit, a 2K image 3 units; with `model:pro`, 2 units and 4 units" in (
        text
    )


async def test_the_audit_channel_names_the_model_of_each_generation(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot()
    audit = fake_discord.channel_id
    channel = {"id": str(audit), "type": 0, "name": "audit", "permissions": ADMIN_PERMISSIONS}
    await admin_command(
        fake_discord,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit)}},
        resolved={"channels": {str(audit): channel}},
    )
    await imagine(fake_discord, model="pro")
    posted = await fake_discord.wait_for_request(
        lambda r: r.path == f"/channels/{audit}/messages" and embed_title(r) == "🖼️ Image generated"
    )
    assert field(posted, "Model") == "Flux-2 pro"
