"""Translations: every shipped catalogue complete and faithful to the template, the template
current with the source, and members served in their own language at the wire."""

from __future__ import annotations

import logging
import re
import string
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from bot import i18n
from bot.domain import JobState
from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.discord_server.validation import _command_problems
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import (
    ADMIN,
    ADMIN_PERMISSIONS,
    READY_TITLE,
    admin_command,
    answer_text,
    embed_of,
    embed_title,
    field,
    original_edits,
)
from tests.test_durability import wait_for_state
from tests.test_results import EVERYONE, OTHER, deliver

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = i18n.LOCALES_DIR / "messages.pot"
SHIPPED = sorted(set(i18n.CATALOGUES.values()))
PROMPT = "ein Leuchtturm im Sturm, Ölgemälde"
GERMAN_READY = "🖼️ Dein Bild ist fertig"
# Every keyword the README's `pybabel extract` command uses: gettext's and discord.py's.
KEYWORDS = {**DEFAULT_KEYWORDS, "locale_str": None}


# --- the catalogues -------------------------------------------------------------------------------


def _read(path: Path) -> Catalog:
    with path.open("rb") as source:
        return read_po(source)


def _placeholders(text: str) -> set[str]:
    """`{name}` fields and `%(name)s` references; Discord markup (`<t:…>`, emoji) is no
    placeholder. A brace that does not parse is reported as one, so it fails the comparison."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError:
        fields = {f"<unbalanced braces in {text!r}>"}
    return fields | set(re.findall(r"%\((\w+)\)[sd]", text))


def catalogue_problems(template: Catalog, catalogue: Catalog) -> list[str]:
    """What keeps `catalogue` from serving every text of `template`: each missing, empty or
    fuzzy entry, and each translation whose placeholders differ from the English text's."""
    problems: list[str] = []
    for english in template:
        if not english.id:
            continue
        entry: Message | None = catalogue.get(english.id)
        if entry is None or not entry.string:
            problems.append(f"missing: {english.id!r}")
            continue
        if entry.fuzzy:
            problems.append(f"fuzzy (not used): {english.id!r}")
            continue
        if isinstance(english.id, tuple):
            wanted = _placeholders(english.id[0]) | _placeholders(english.id[1])
            forms = list(entry.string) if isinstance(entry.string, tuple) else [entry.string]
            if len(forms) != catalogue.num_plurals or not all(forms):
                problems.append(f"needs {catalogue.num_plurals} plural forms: {english.id!r}")
                continue
        else:
            wanted = _placeholders(english.id)
            forms = [str(entry.string)]
        for form in forms:
            if _placeholders(form) != wanted:
                problems.append(
                    f"placeholders differ: {english.id!r} has {sorted(wanted)}, "
                    f"{form!r} has {sorted(_placeholders(form))}"
                )
    return problems


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_catalogue_translates_every_text_with_the_same_placeholders(name: str) -> None:
    path = i18n.catalogue_path(name)
    if not path.exists():
        pytest.skip(f"no {name} catalogue shipped yet")
    problems = catalogue_problems(_read(TEMPLATE), _read(path))
    assert not problems, "\n".join(problems)


# The commands members type (not /owner: the operator's, English only).
TOP_LEVEL_COMMANDS = ("imagine", "quota", "help", "history", "settings", "server", "moderation")
_COMMAND_MENTION = re.compile(r"(?<![\w.:/])/([-\w]+)")


@pytest.mark.parametrize("name", SHIPPED)
def test_texts_name_commands_as_the_same_catalogue_registers_them(name: str) -> None:
    """A German text says `/bild`, as a German client lists the command, never `/imagine`."""
    path = i18n.catalogue_path(name)
    if not path.exists():
        pytest.skip(f"no {name} catalogue shipped yet")
    catalogue = _read(path)
    locale = next(code for code, shipped in i18n.CATALOGUES.items() if shipped == name)
    known = {i18n.translate(locale, command) or command for command in TOP_LEVEL_COMMANDS}
    wrong = []
    for entry in catalogue:
        forms = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        for form in forms:
            wrong += [
                f"/{used} in {form!r}"
                for used in _COMMAND_MENTION.findall(form or "")
                if used not in known
            ]
    assert not wrong, f"commands this catalogue calls otherwise ({sorted(known)}):\n" + "\n".join(
        wrong
    )


def test_the_check_fails_for_a_missing_a_fuzzy_and_a_misplaced_entry() -> None:
    """The completeness check itself, on a catalogue broken in each way it must catch."""
    template = Catalog(locale=None)
    for text in ("Hello {member}", "Bye", "Soon", "Later"):
        template.add(text)
    template.add(("{count} unit", "{count} units"))
    broken = Catalog(locale="de")
    broken.add("Hello {member}", "Hallo {mitglied}")  # a renamed placeholder
    broken.add("Bye", "Tschüss", flags=["fuzzy"])
    broken.add("Soon", "")  # empty
    broken.add(("{count} unit", "{count} units"), ("{count} Einheit", "Einheiten"))
    problems = catalogue_problems(template, broken)
    assert any(p.startswith("placeholders differ: 'Hello {member}'") for p in problems)
    assert "fuzzy (not used): 'Bye'" in problems
    assert "missing: 'Soon'" in problems
    assert "missing: 'Later'" in problems
    assert any("'{count} unit'" in p and "'Einheiten'" in p for p in problems), problems
    fixed = Catalog(locale="de")
    fixed.add("Hello {member}", "Hallo {member}")
    for text in ("Bye", "Soon", "Later"):
        fixed.add(text, text.upper())
    fixed.add(("{count} unit", "{count} units"), ("{count} Einheit", "{count} Einheiten"))
    assert catalogue_problems(template, fixed) == []


def test_the_template_holds_exactly_the_texts_of_the_source() -> None:
    """Re-extracted as the README says: a text added or changed in the source without
    `pybabel extract` leaves the template, and so every catalogue, stale."""
    with (ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    extracted = {
        message
        for _, _, message, _, _ in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=KEYWORDS
        )
    }
    in_template = {message.id for message in _read(TEMPLATE) if message.id}
    assert extracted - in_template == set(), "texts missing from messages.pot: re-extract"
    assert in_template - extracted == set(), "texts no longer in the source: re-extract"


@pytest.mark.parametrize(
    ("discord_locale", "catalogue"),
    [
        ("de", "de"),
        ("es-ES", "es"),
        ("es-419", "es"),
        ("fr", "fr"),
        ("pt-BR", "pt_BR"),
        ("ja", "ja"),
        ("en-US", None),
        ("en-GB", None),
        ("ko", None),
        (None, None),
    ],
)
def test_discord_locales_read_their_catalogue_and_anything_else_reads_english(
    discord_locale: str | None, catalogue: str | None
) -> None:
    assert i18n.catalogue_name(discord_locale) == catalogue
    with i18n.use_locale(discord_locale):
        if catalogue is None:
            assert i18n._("🖼️ Your image is ready") == "🖼️ Your image is ready"
            assert i18n.ngettext("{count} unit", "{count} units", 2) == "{count} units"


def test_german_counts_and_numbers_read_as_german() -> None:
    with i18n.use_locale("de"):
        assert i18n.ngettext("{count} unit", "{count} units", 1) == "{count} Einheit"
        assert i18n.ngettext("{count} unit", "{count} units", 3) == "{count} Einheiten"
        assert i18n.decimal(2.5, 1) == "2,5"
    assert i18n.decimal(2.5, 1) == "2.5"
    assert i18n.current_locale() == i18n.ENGLISH, "the locale went back after the block"


# --- at the wire ---------------------------------------------------------------------------------


def _command(fake: FakeDiscord, name: str) -> dict[str, Any]:
    for commands in fake.synced_commands.values():
        for command in commands:
            if command["name"] == name:
                return command
    raise AssertionError(f"no command {name!r} was registered")


def _option(command: dict[str, Any], name: str) -> dict[str, Any]:
    return next(o for o in command.get("options", []) if o["name"] == name)


async def _answer_titled(
    fake: FakeDiscord, interaction: FakeInteraction, title: str, timeout: float = 15
) -> RecordedRequest:
    def arrived(request: RecordedRequest) -> bool:
        return (
            request.method == "PATCH"
            and request.path.endswith(f"/{interaction.token}/messages/@original")
            and embed_title(request) == title
        )

    return await fake.wait_for_request(arrived, timeout)


async def test_commands_are_registered_with_german_names_descriptions_and_choices(
    start_bot: StartBot, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.ui.locale")
    await start_bot()
    # No shipped translation broke Discord's rules (the translator would have left it out).
    assert [r.getMessage() for r in caplog.records if r.name == "bot.ui.locale"] == []
    assert fake_discord.command_puts >= 1, "the sync was accepted"
    imagine = _command(fake_discord, "imagine")
    assert imagine["name_localizations"]["de"] == "bild"
    assert imagine["description_localizations"]["de"] == "Mach aus einem Prompt ein Bild (Flux-2)."
    ratio = _option(imagine, "aspect_ratio")
    assert ratio["name_localizations"]["de"] == "seitenverhältnis"
    widescreen = next(c for c in ratio["choices"] if c["value"] == "16:9")
    assert widescreen["name_localizations"]["de"] == "16:9 Breitbild"
    assert "en-US" not in imagine["name_localizations"], "English is the default, not a copy"
    history = _command(fake_discord, "history")
    assert history["name_localizations"]["de"] == "verlauf"
    forget = _option(history, "forget")
    assert forget["name_localizations"]["de"] == "vergessen"
    menu = _command(fake_discord, "Use as reference")
    assert menu["name_localizations"]["de"] == "Als Referenz nutzen"
    # Every German name Discord got obeys its rules (the fake refuses the sync otherwise).
    for commands in fake_discord.synced_commands.values():
        for command in commands:
            assert command.get("name_localizations", {}).get("de", "x") != ""


async def test_a_german_member_gets_acknowledgement_progress_and_result_in_german(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    fake_kie.script_next(TaskScript(states=["waiting", "generating", "success"], step_seconds=0.3))
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "resolution": "2K"}, locale="de"
    )
    final = await _answer_titled(fake_discord, interaction, GERMAN_READY)
    titles = [embed_title(edit) for edit in original_edits(fake_discord, interaction)]
    assert titles == ["🎨 Wird erstellt…", GERMAN_READY]
    progress = original_edits(fake_discord, interaction)[0]
    assert field(progress, "Optionen") == "1:1 · 2K"
    assert field(progress, "Gestartet").startswith("<t:"), "times stay Discord timestamps"
    assert field(final, "Angefragt von") == f"<@{interaction.user_id}>"
    assert field(final, "Heute noch übrig") == "8 von 10"
    assert field(final, "Dauer").endswith(" s")
    labels = [button["label"] for row in final.json["components"] for button in row["components"]]
    assert labels == ["Neu würfeln", "Variieren", "Bearbeiten", "Löschen"]
    assert await running.job_states() == {"delivered": 1}


async def test_english_members_still_read_english_beside_a_german_one(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    await start_bot()
    german = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, locale="de")
    english = await fake_discord.send_interaction(
        "imagine", {"prompt": "a lighthouse in a storm"}, user_id=222, locale="en-US"
    )
    await _answer_titled(fake_discord, german, GERMAN_READY)
    final = await _answer_titled(fake_discord, english, READY_TITLE)
    assert field(final, "Quota left today") == "9 of 10"
    assert final.json["components"][0]["components"][0]["label"] == "Re-roll"


async def test_a_refusal_is_private_and_german(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    interaction = await fake_discord.send_interaction(
        "imagine", {"prompt": PROMPT, "aspect_ratio": "auto"}, locale="de"
    )
    answer = await fake_discord.wait_for_request(
        lambda r: r.path.endswith("/callback") and str(interaction.id) in r.path
    )
    text = answer_text(answer)
    assert text.startswith("Das Format `auto` passt sich einem Referenzbild an")
    assert "Es wurde nichts verbraucht." in text
    assert answer.json["data"]["flags"] & 64, "private"
    assert await running.job_states() == {}


async def test_a_german_job_resumed_after_a_restart_still_answers_in_german(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    first = await start_bot(poll_interval=0.15)
    fake_kie.script_next(TaskScript(states=["waiting", "generating", "success"], step_seconds=0.6))
    interaction = await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, locale="de")
    await wait_for_state(first.storage, 1, JobState.SUBMITTED)
    job = await first.storage.jobs.get_job(1)
    assert job is not None and job.locale == "de", "the locale is stored with the job"
    await first.bot.close()
    paused = original_edits(fake_discord, interaction)[-1]
    assert embed_title(paused) == "⏸️ Der Bot startet neu …"
    await start_bot(poll_interval=0.15)
    final = await _answer_titled(fake_discord, interaction, GERMAN_READY)
    assert field(final, "Optionen") == "1:1 · 1K"


async def test_the_audit_channel_speaks_the_servers_language_whoever_asked(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_discord.preferred_locale = "de"  # the server's Community language
    running = await start_bot()
    audit_channel = fake_discord.channel_id
    channel = {"id": str(audit_channel), "type": 0, "name": "audit"}
    await admin_command(
        fake_discord,
        "moderation",
        "audit-channel",
        {"channel": {"type": 7, "value": str(audit_channel)}},
        resolved={"channels": {str(audit_channel): {**channel, "permissions": ADMIN_PERMISSIONS}}},
    )
    english = await fake_discord.send_interaction("imagine", {"prompt": "a quiet lake"})
    final = await _answer_titled(fake_discord, english, READY_TITLE)
    assert field(final, "Options") == "1:1 · 1K", "the member's own reply stays English"
    await running.idle()
    posts = [
        r
        for r in fake_discord.requests
        if r.method == "POST" and r.path == f"/channels/{audit_channel}/messages"
    ]
    assert [embed_title(p) for p in posts] == ["🖼️ Bild erstellt"]
    assert [f["name"] for f in embed_of(posts[-1])["fields"]][:2] == ["Mitglied", "Kanal"]


async def test_buttons_and_the_edit_form_answer_in_the_language_of_whoever_presses(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    running = await start_bot()
    _, _, message = await deliver(fake_discord, running)  # an English member's result
    edit = await fake_discord.press_button(
        message["id"], "imagine:edit:1", user_id=OTHER, permissions=EVERYONE, locale="de"
    )
    callback = await fake_discord.wait_for_request(
        lambda r: r.path.endswith("/callback") and str(edit.id) in r.path
    )
    modal = callback.json["data"]
    assert modal["title"] == "Bearbeiten und neu erstellen"
    labels = [item["label"] for row in modal["components"] for item in row["components"]]
    assert labels == ["Prompt", "Optionen: ar (Format), res (1K/2K), model"]
    # The submission carries the same member's locale: the Edit form's listener speaks it.
    submitted = await fake_discord.submit_modal(edit, {"options": "ar 5:4"})
    refused = await fake_discord.wait_for_request(
        lambda r: r.path.endswith("/callback") and str(submitted.id) in r.path
    )
    assert answer_text(refused).startswith("**5:4** ist kein Wert für Format (ar)")
    assert answer_text(refused).endswith("Es wurde nichts verbraucht.")

    reroll = await fake_discord.press_button(
        message["id"], "imagine:reroll:1", user_id=OTHER, permissions=EVERYONE, locale="de"
    )
    final = await _answer_titled(fake_discord, reroll, "🖼️ 🎲 Neuer Wurf ist fertig")
    assert field(final, "Angefragt von") == f"<@{OTHER}>"
    assert final.json["components"][0]["components"][0]["label"] == "Neu würfeln"


async def test_help_in_german_names_the_german_commands(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    await start_bot()
    interaction = await fake_discord.send_interaction(
        "help", {}, user_id=ADMIN, permissions=ADMIN_PERMISSIONS, locale="de"
    )
    answer = await fake_discord.wait_for_request(
        lambda r: r.method == "POST" and interaction.token in r.path and "/callback" not in r.path
    )
    embed = embed_of(answer)
    assert embed["title"] == "🖼️ Imagine: Bilder aus deinen Worten"
    checklist = next(f["value"] for f in embed["fields"] if f["name"].startswith("Einrichtung"))
    # The commands are named as a German client shows them (the names Discord got).
    assert "`/server kontingent · /server rollen-kontingent`" in checklist
    assert "`/moderation protokollkanal`" in checklist
    assert "1 Einheit" in embed["fields"][0]["value"]


async def test_the_welcome_speaks_the_new_servers_language(
    start_bot: StartBot, fake_discord: FakeDiscord
) -> None:
    running = await start_bot()
    await running.bot.wait_until_ready()
    guild = await fake_discord.join_guild(preferred_locale="de")
    post = await fake_discord.wait_for_request(
        lambda r: r.path.endswith(f"/channels/{guild.channel_id}/messages")
    )
    assert str((post.json or {})["content"]).startswith("👋 Hallo! Ich mache aus Prompts Bilder")
    assert "`/hilfe`" in str((post.json or {})["content"])


@pytest.mark.parametrize(
    ("localized", "refused"),
    [
        ({"name_localizations": {"de": "bild"}}, False),
        ({"name_localizations": {"de": "Bild"}}, True),  # names are lowercase in every locale
        ({"name_localizations": {"de": "ein bild"}}, True),  # and have no spaces
        ({"name_localizations": {"xx": "bild"}}, True),  # Discord knows no locale "xx"
        ({"description_localizations": {"de": "x" * 101}}, True),
        ({"description_localizations": {"pt-BR": "Uma imagem."}}, False),
    ],
)
def test_the_fake_discord_checks_localizations_as_discord_does(
    localized: dict[str, Any], refused: bool
) -> None:
    command = {"name": "imagine", "type": 1, "description": "Draw.", **localized}
    assert bool(_command_problems([command])) is refused
