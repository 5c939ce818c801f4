"""Payload checks as Discord does them: command, message, component and upload limits, answered
with Discord's own 50035 error shape. Pure functions of the payload; no server state."""

from __future__ import annotations

import copy
import struct
from typing import Any

from tests.fakes.discord_server.records import (
    _ACTION_ROW,
    _BUTTON,
    _COMMAND_NAME,
    _LABEL,
    _LINK_STYLE,
    _MAX_ACTION_ROWS,
    _MAX_CUSTOM_ID,
    _MAX_LABEL,
    _MAX_MODAL_COMPONENTS,
    _MAX_MODAL_TITLE,
    _MAX_PLACEHOLDER,
    _MAX_ROW_WIDTH,
    _MAX_TEXT_INPUT_LABEL,
    _MAX_TEXT_INPUT_LENGTH,
    _PNG_SIGNATURE,
    _PREMIUM_STYLE,
    _SELECTS,
    _TEXT_INPUT,
)

_Problem = tuple[tuple[str | int, ...], str, str]

# Discord's locales: the only keys a localization dictionary may have.
# https://discord.com/developers/docs/reference#locales
LOCALES = frozenset(
    [
        "id",
        "da",
        "de",
        "en-GB",
        "en-US",
        "es-ES",
        "es-419",
        "fr",
        "hr",
        "it",
        "lt",
        "hu",
        "nl",
        "no",
        "pl",
        "pt-BR",
        "ro",
        "fi",
        "sv-SE",
        "vi",
        "tr",
        "cs",
        "el",
        "bg",
        "ru",
        "uk",
        "hi",
        "th",
        "zh-CN",
        "ja",
        "zh-TW",
        "ko",
    ]
)


class _ApiError(Exception):
    """A Discord JSON error answer, raised by route handlers."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: dict[str, Any] = {"code": code, "message": message}
        if errors:
            self.body["errors"] = errors


def _form_error(problems: list[_Problem]) -> _ApiError:
    """Discord's 50035 answer, with the nested ``errors`` object it uses."""
    errors: dict[str, Any] = {}
    for path, code, message in problems:
        node = errors
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return _ApiError(400, 50035, "Invalid Form Body", errors)


def _length_problems(
    path: tuple[str | int, ...], value: Any, low: int, high: int
) -> list[_Problem]:
    if isinstance(value, str) and low <= len(value) <= high:
        return []
    return [(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")]


def _name_problems(path: tuple[str | int, ...], name: Any, *, chat_input: bool) -> list[_Problem]:
    problems = _length_problems(path, name, 1, 32)
    if not problems and chat_input and (not _COMMAND_NAME.match(name) or name != name.lower()):
        problems.append((path, "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"))
    return problems


def _localization_problems(
    path: tuple[str | int, ...], item: dict[str, Any], *, chat_input: bool, described: bool
) -> list[_Problem]:
    """`name_localizations` and `description_localizations`: known locales only, each value
    under the same rules as the default (a name's, a description's 1 to 100 characters)."""
    problems: list[_Problem] = []
    fields = [("name_localizations", True)]
    if described:
        fields.append(("description_localizations", False))
    for key, is_name in fields:
        localized = item.get(key)
        if localized is None:
            continue
        if not isinstance(localized, dict):
            problems.append(((*path, key), "DICT_TYPE_CONVERT", "Only dictionaries may be used"))
            continue
        for locale, value in localized.items():
            where = (*path, key, locale)
            if locale not in LOCALES:
                problems.append((where, "BASE_TYPE_CHOICES", f"Value must be one of {{{locale}}}."))
            elif is_name:
                problems += _name_problems(where, value, chat_input=chat_input)
            else:
                problems += _length_problems(where, value, 1, 100)
    return problems


def _option_problems(path: tuple[str | int, ...], options: list[Any]) -> list[_Problem]:
    problems: list[_Problem] = []
    if len(options) > 25:
        problems.append((path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."))
    names: set[str] = set()
    seen_optional = False
    for index, option in enumerate(options):
        where = (*path, index)
        problems += _name_problems((*where, "name"), option.get("name"), chat_input=True)
        if option.get("name") in names:
            problems.append(
                ((*where, "name"), "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS", "Duplicate")
            )
        names.add(option.get("name"))
        problems += _length_problems((*where, "description"), option.get("description"), 1, 100)
        problems += _localization_problems(where, option, chat_input=True, described=True)
        if option.get("type") in (1, 2):  # sub-command / group: options nest
            problems += _option_problems((*where, "options"), option.get("options") or [])
            continue
        if option.get("required"):
            if seen_optional:
                problems.append(
                    (
                        where,
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
                )
        else:
            seen_optional = True
        choices = option.get("choices") or []
        if len(choices) > 25:
            problems.append(
                ((*where, "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            )
        for c_index, choice in enumerate(choices):
            problems += _length_problems(
                (*where, "choices", c_index, "name"), choice["name"], 1, 100
            )
            for locale, value in (choice.get("name_localizations") or {}).items():
                at = (*where, "choices", c_index, "name_localizations", locale)
                if locale not in LOCALES:
                    problems.append((at, "BASE_TYPE_CHOICES", "Unknown locale."))
                else:
                    problems += _length_problems(at, value, 1, 100)
            if isinstance(choice.get("value"), str) and len(choice["value"]) > 100:
                problems += _length_problems(
                    (*where, "choices", c_index, "value"), choice["value"], 1, 100
                )
        for key, low in (("min_length", 0), ("max_length", 1)):
            value = option.get(key)
            if value is not None and not low <= value <= 6000:
                problems.append(
                    (
                        (*where, key),
                        "NUMBER_TYPE_MAX" if value > 6000 else "NUMBER_TYPE_MIN",
                        f"int value should be between {low} and 6000.",
                    )
                )
    return problems


def _command_problems(commands: list[Any]) -> list[_Problem]:
    """The checks Discord makes at sync time (discord.py checks none of them locally)."""
    problems: list[_Problem] = []
    seen: set[tuple[Any, Any]] = set()
    for index, command in enumerate(commands):
        if not isinstance(command, dict):
            problems.append(((index,), "DICT_TYPE_CONVERT", "Only dictionaries may be used"))
            continue
        ctype = command.get("type", 1)
        name = command.get("name")
        problems += _name_problems((index, "name"), name, chat_input=ctype == 1)
        problems += _localization_problems(
            (index,), command, chat_input=ctype == 1, described=ctype == 1
        )
        if (name, ctype) in seen:
            problems.append(
                ((index, "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME", "Duplicate command name")
            )
        seen.add((name, ctype))
        description = command.get("description") or ""
        if ctype == 1:
            problems += _length_problems((index, "description"), description, 1, 100)
        elif description:
            problems.append(
                (
                    (index, "description"),
                    "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
                    "Context menu commands cannot have description",
                )
            )
        problems += _option_problems((index, "options"), command.get("options") or [])
    return problems


def _message_problems(payload: dict[str, Any]) -> list[_Problem]:
    """Content and embed limits (2000 chars; 10 embeds, 6000 chars in all, per-field limits)."""
    problems: list[_Problem] = []
    content = payload.get("content")
    if isinstance(content, str) and len(content) > 2000:
        problems.append((("content",), "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."))
    embeds = payload.get("embeds") or []
    if len(embeds) > 10:
        problems.append((("embeds",), "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."))
    total = 0

    def check(
        path: tuple[str | int, ...], value: Any, limit: int, *, required: bool = False
    ) -> None:
        nonlocal total
        if value is None:
            if required:
                problems.append((path, "BASE_TYPE_REQUIRED", "This field is required"))
            return
        size = len(str(value))
        total += size
        if size > limit or (required and size == 0):
            problems.append(
                (path, "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {limit} in length.")
            )

    for index, embed in enumerate(embeds):
        where: tuple[str | int, ...] = ("embeds", index)
        check((*where, "title"), embed.get("title"), 256)
        check((*where, "description"), embed.get("description"), 4096)
        check((*where, "footer", "text"), (embed.get("footer") or {}).get("text"), 2048)
        check((*where, "author", "name"), (embed.get("author") or {}).get("name"), 256)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            problems.append(
                ((*where, "fields"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            )
        for f_index, embed_field in enumerate(fields):
            check((*where, "fields", f_index, "name"), embed_field.get("name"), 256, required=True)
            check(
                (*where, "fields", f_index, "value"), embed_field.get("value"), 1024, required=True
            )
    if total > 6000:
        problems.append(
            (("embeds",), "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        )
    return problems


def _walk_components(
    components: list[Any], path: tuple[str | int, ...] = ("components",)
) -> list[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every component of a message, depth first, with its form-error path."""
    found: list[tuple[tuple[str | int, ...], dict[str, Any]]] = []
    for index, component in enumerate(components):
        if not isinstance(component, dict):
            continue
        where = (*path, index)
        found.append((where, component))
        # Action rows and containers nest in "components", a section's button in "accessory".
        found += _walk_components(component.get("components") or [], (*where, "components"))
        if isinstance(component.get("accessory"), dict):
            found.append(((*where, "accessory"), component["accessory"]))
    return found


def _button_problems(path: tuple[str | int, ...], button: dict[str, Any]) -> list[_Problem]:
    problems: list[_Problem] = []
    style = button.get("style")
    if style not in range(1, _PREMIUM_STYLE + 1):
        problems.append(
            ((*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5, 6}.")
        )
        return problems
    custom_id, label = button.get("custom_id"), button.get("label")
    if style == _LINK_STYLE:
        if not button.get("url"):
            problems.append(((*path, "url"), "BUTTON_COMPONENT_URL_REQUIRED", "A url is required"))
        if custom_id is not None:
            problems.append(
                (
                    (*path, "custom_id"),
                    "BUTTON_COMPONENT_LINK_HAS_CUSTOM_ID",
                    "A custom id cannot be used with a link button",
                )
            )
    elif style == _PREMIUM_STYLE:
        if not button.get("sku_id"):
            problems.append(((*path, "sku_id"), "BASE_TYPE_REQUIRED", "This field is required"))
        if any(button.get(k) for k in ("custom_id", "label", "url", "emoji")):
            problems.append(
                (
                    path,
                    "BUTTON_COMPONENT_PREMIUM_INVALID",
                    "Premium buttons cannot have a custom id, label, url or emoji",
                )
            )
    else:
        if custom_id is None:
            problems.append(
                (
                    (*path, "custom_id"),
                    "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED",
                    "A custom id is required",
                )
            )
        if button.get("url") is not None:
            problems.append(
                (
                    (*path, "url"),
                    "BUTTON_COMPONENT_INVALID_URL",
                    "Only link buttons can have a url",
                )
            )
    if custom_id is not None:
        problems += _length_problems((*path, "custom_id"), custom_id, 1, _MAX_CUSTOM_ID)
    if label is not None and (not isinstance(label, str) or len(label) > _MAX_LABEL):
        problems.append(
            (
                (*path, "label"),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {_MAX_LABEL} or fewer in length.",
            )
        )
    if style != _PREMIUM_STYLE and not label and not button.get("emoji"):
        problems.append(
            (
                (*path, "label"),
                "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED",
                "A label or emoji is required",
            )
        )
    return problems


def _component_problems(components: Any, *, v2: bool) -> list[_Problem]:
    """Layout checks Discord makes on message components (action rows and buttons).

    Without IS_COMPONENTS_V2 a message holds at most 5 top-level action rows; either way an
    action row holds 1-5 buttons or one select, and custom ids are unique in the message.
    """
    if components is None:
        return []
    if not isinstance(components, list):
        return [(("components",), "BASE_TYPE_ARRAY", "Must be an array")]
    problems: list[_Problem] = []
    if not v2:
        if len(components) > _MAX_ACTION_ROWS:
            problems.append(
                (
                    ("components",),
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {_MAX_ACTION_ROWS} or fewer in length.",
                )
            )
        for index, component in enumerate(components):
            if not isinstance(component, dict) or component.get("type") != _ACTION_ROW:
                problems.append(
                    (
                        ("components", index, "type"),
                        "UNION_TYPE_CHOICES",
                        'Value of field "type" must be one of (1,).',
                    )
                )
    seen: set[str] = set()
    for path, component in _walk_components(components):
        ctype = component.get("type")
        if ctype == _ACTION_ROW:
            children = component.get("components") or []
            if not 1 <= len(children) <= _MAX_ROW_WIDTH:
                problems.append(
                    (
                        (*path, "components"),
                        "BASE_TYPE_BAD_LENGTH",
                        f"Must be between 1 and {_MAX_ROW_WIDTH} in length.",
                    )
                )
            kinds = [c.get("type") for c in children if isinstance(c, dict)]
            if any(k in _SELECTS for k in kinds) and len(kinds) > 1:
                problems.append(
                    (
                        (*path, "components"),
                        "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                        "The specified component exceeds the maximum width",
                    )
                )
        elif ctype == _BUTTON:
            problems += _button_problems(path, component)
        custom_id = component.get("custom_id")
        if isinstance(custom_id, str):
            if custom_id in seen:
                problems.append(
                    (
                        (*path, "custom_id"),
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    )
                )
            seen.add(custom_id)
    return problems


def modal_text_inputs(modal: dict[str, Any]) -> list[dict[str, Any]]:
    """The text inputs of a (valid) modal, in order: each in an action row or a label."""
    inputs = []
    for component in modal.get("components") or []:
        if component.get("type") == _ACTION_ROW:
            inputs += [c for c in component.get("components") or [] if c.get("type") == _TEXT_INPUT]
        elif component.get("type") == _LABEL and isinstance(component.get("component"), dict):
            inner = component["component"]
            if inner.get("type") == _TEXT_INPUT:
                inputs.append(inner)
    return inputs


def _text_input_problems(
    path: tuple[str | int, ...], text_input: dict[str, Any], *, in_label: bool
) -> list[_Problem]:
    problems = _length_problems(
        (*path, "custom_id"), text_input.get("custom_id"), 1, _MAX_CUSTOM_ID
    )
    if text_input.get("style") not in (1, 2):
        problems.append(((*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2}."))
    label = text_input.get("label")
    if in_label and label is not None:
        # The label is the Label component's; a text input inside one may not have its own.
        problems.append(((*path, "label"), "COMPONENT_INVALID_FIELD", "Label is not allowed"))
    elif not in_label:
        problems += _length_problems((*path, "label"), label, 1, _MAX_TEXT_INPUT_LABEL)
    low, high = text_input.get("min_length"), text_input.get("max_length")
    if low is not None and not (isinstance(low, int) and 0 <= low <= _MAX_TEXT_INPUT_LENGTH):
        problems.append(
            ((*path, "min_length"), "NUMBER_TYPE_MAX", "int value should be between 0 and 4000.")
        )
    if high is not None and not (isinstance(high, int) and 1 <= high <= _MAX_TEXT_INPUT_LENGTH):
        problems.append(
            ((*path, "max_length"), "NUMBER_TYPE_MAX", "int value should be between 1 and 4000.")
        )
    value = text_input.get("value")
    if value is not None:
        most = high if isinstance(high, int) else _MAX_TEXT_INPUT_LENGTH
        problems += _length_problems((*path, "value"), value, 0, min(most, _MAX_TEXT_INPUT_LENGTH))
    placeholder = text_input.get("placeholder")
    if placeholder is not None:
        problems += _length_problems((*path, "placeholder"), placeholder, 0, _MAX_PLACEHOLDER)
    return problems


def _modal_problems(data: dict[str, Any]) -> list[_Problem]:
    """The checks Discord makes on a MODAL callback: a custom id and a title, then 1 to 5
    components, each an action row holding one text input (the older layout, which
    discord.py 2.7 still sends) or a label wrapping one."""
    problems = _length_problems(("data", "custom_id"), data.get("custom_id"), 1, _MAX_CUSTOM_ID)
    problems += _length_problems(("data", "title"), data.get("title"), 1, _MAX_MODAL_TITLE)
    components = data.get("components")
    if not isinstance(components, list) or not 1 <= len(components) <= _MAX_MODAL_COMPONENTS:
        problems.append(
            (
                ("data", "components"),
                "BASE_TYPE_BAD_LENGTH",
                f"Must be between 1 and {_MAX_MODAL_COMPONENTS} in length.",
            )
        )
        return problems
    seen: set[str] = set()
    for index, component in enumerate(components):
        where: tuple[str | int, ...] = ("data", "components", index)
        kind = component.get("type") if isinstance(component, dict) else None
        if kind == _ACTION_ROW:
            children = component.get("components") or []
            if len(children) != 1 or children[0].get("type") != _TEXT_INPUT:
                problems.append(
                    (
                        (*where, "components"),
                        "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                        "An action row in a modal holds exactly one text input",
                    )
                )
                continue
            text_input, inner = children[0], (*where, "components", 0)
            problems += _text_input_problems(inner, text_input, in_label=False)
        elif kind == _LABEL:
            problems += _length_problems((*where, "label"), component.get("label"), 1, 45)
            text_input = component.get("component") or {}
            if text_input.get("type") != _TEXT_INPUT:
                problems.append(
                    ((*where, "component"), "UNION_TYPE_CHOICES", "Only text inputs are faked")
                )
                continue
            problems += _text_input_problems((*where, "component"), text_input, in_label=True)
        else:
            problems.append(
                ((*where, "type"), "UNION_TYPE_CHOICES", 'Value of field "type" must be 1 or 18.')
            )
            continue
        custom_id = text_input.get("custom_id")
        if custom_id in seen:
            problems.append(
                (
                    where,
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            )
        seen.add(custom_id)
    return problems


def _numbered_components(components: list[Any]) -> list[dict[str, Any]]:
    """A copy with Discord's component ids: each component without one gets the next free
    number, depth first from 1, skipping ids the bot chose itself."""
    numbered = copy.deepcopy(components)
    walked = [c for _, c in _walk_components(numbered)]
    taken = {c["id"] for c in walked if isinstance(c.get("id"), int) and c["id"] > 0}
    next_id = 1
    for component in walked:
        if isinstance(component.get("id"), int) and component["id"] > 0:
            continue
        while next_id in taken:
            next_id += 1
        component["id"] = next_id
        taken.add(next_id)
    return numbered


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (the first chunk of every PNG)."""
    if len(data) >= 24 and data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return None


def _option_payload(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):  # a raw option, e.g. {"type": 8, "value": "<role id>"}
        if "type" not in value:
            raise TypeError(
                f"option {name}: a raw option needs a 'type'; attachments must come from"
                " FakeDiscord.add_attachment()"
            )
        return {"name": name, **value}
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return {"name": name, "type": 5, "value": value}
    if isinstance(value, int):
        return {"name": name, "type": 4, "value": value}
    if isinstance(value, float):
        return {"name": name, "type": 10, "value": value}
    if isinstance(value, str):
        return {"name": name, "type": 3, "value": value}
    raise TypeError(f"cannot infer a Discord option type for {name}={value!r}")
