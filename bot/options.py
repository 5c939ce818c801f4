"""The options line of the Edit form: a small, forgiving syntax for a request's shape, size and
model, written back the same way to prefill the form.

    ar 16:9, res 2K, model pro

Pairs are separated by commas, semicolons or spaces; a key and its value by a space, `:` or `=`
(`ar:16:9`, `res=2k`). Keys: `ar` (also `aspect`, `ratio`, `aspect_ratio`, `shape`), `res`
(`resolution`, `size`, `quality`), `model`. A value alone names its own key (`16:9`, `2K`,
`pro`). Case does not matter, `x` or `/` may stand for `:` in a ratio (`16x9`), and whatever is
not mentioned keeps the edited job's value. Pure functions: the form (`bot/ui`) and its cog call
them; no Discord here.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass

from bot.domain import (
    ASPECT_RATIOS,
    AUTO_ASPECT_RATIO,
    MODELS,
    RESOLUTIONS,
    ImageRequest,
    parse_aspect_ratio,
    parse_model,
    parse_resolution,
)


class OptionKey(enum.StrEnum):
    ASPECT_RATIO = "ar"
    RESOLUTION = "res"
    MODEL = "model"


_KEYS = {
    "ar": OptionKey.ASPECT_RATIO,
    "aspect": OptionKey.ASPECT_RATIO,
    "aspect_ratio": OptionKey.ASPECT_RATIO,
    "aspect-ratio": OptionKey.ASPECT_RATIO,
    "ratio": OptionKey.ASPECT_RATIO,
    "shape": OptionKey.ASPECT_RATIO,
    "res": OptionKey.RESOLUTION,
    "resolution": OptionKey.RESOLUTION,
    "size": OptionKey.RESOLUTION,
    "quality": OptionKey.RESOLUTION,
    "model": OptionKey.MODEL,
}
# What each key accepts, as written in an error message.
ACCEPTED = {
    OptionKey.ASPECT_RATIO: (*ASPECT_RATIOS, AUTO_ASPECT_RATIO),
    OptionKey.RESOLUTION: RESOLUTIONS,
    OptionKey.MODEL: MODELS,
}
_SEPARATORS = re.compile(r"[\s,;]+")
_RATIO_SIGNS = re.compile(r"(?<=\d)\s*[x×/]\s*(?=\d)")


class Problem(enum.StrEnum):
    UNKNOWN = "unknown"  # a word that is no key and no value
    BAD_VALUE = "bad_value"  # a key with a value it does not take
    MISSING_VALUE = "missing_value"  # a key at the end, with nothing after it
    TWICE = "twice"  # one key given two different values


@dataclass(frozen=True)
class OptionsError:
    """Why an options line was not understood; the words are `bot/ui`'s."""

    problem: Problem
    word: str = ""  # as typed
    key: OptionKey | None = None


def format_options(image: ImageRequest) -> str:
    """The options of `image` as the form shows them, e.g. `ar 16:9, res 2K, model pro`."""
    return f"ar {image.aspect_ratio}, res {image.resolution}, model {image.model}"


def parse_options(text: str, current: ImageRequest) -> ImageRequest | OptionsError:
    """`current` with the options `text` names changed, or what was not understood.

    Only the shape, size and model change: the prompt and references are the caller's.
    """
    tokens = [t for t in _SEPARATORS.split(_RATIO_SIGNS.sub(":", text.strip())) if t]
    found: dict[OptionKey, str] = {}
    index = 0
    while index < len(tokens):
        word = tokens[index]
        key, value = _split(word)
        if key is None:
            key = _key_of_value(word)
            if key is None:
                return OptionsError(Problem.UNKNOWN, word)
            value = word
        elif value is None:
            if index + 1 >= len(tokens):
                return OptionsError(Problem.MISSING_VALUE, word, key)
            index += 1
            value = tokens[index]
        normal = _normal(key, value)
        if normal is None:
            return OptionsError(Problem.BAD_VALUE, value, key)
        if found.get(key, normal) != normal:
            return OptionsError(Problem.TWICE, value, key)
        found[key] = normal
        index += 1
    changed = current
    if OptionKey.ASPECT_RATIO in found:
        ratio = parse_aspect_ratio(found[OptionKey.ASPECT_RATIO])
        changed = dataclasses.replace(changed, aspect_ratio=ratio)
    if OptionKey.RESOLUTION in found:
        size = parse_resolution(found[OptionKey.RESOLUTION])
        changed = dataclasses.replace(changed, resolution=size)
    if OptionKey.MODEL in found:
        changed = dataclasses.replace(changed, model=parse_model(found[OptionKey.MODEL]))
    return changed


def _split(word: str) -> tuple[OptionKey | None, str | None]:
    """A key, and its value when written in the same word (`ar:16:9`, `res=2k`)."""
    lowered = word.lower()
    if lowered in _KEYS:
        return _KEYS[lowered], None
    for sign in (":", "="):
        name, found, value = lowered.partition(sign)
        if found and name in _KEYS:
            return _KEYS[name], value or None
    return None, None


def _key_of_value(word: str) -> OptionKey | None:
    for key in OptionKey:
        if _normal(key, word) is not None:
            return key
    return None


def _normal(key: OptionKey, value: str) -> str | None:
    """`value` as the option's own spelling (`2k` → `2K`), or None if the key does not take it."""
    wanted = value.strip().lower()
    for accepted in ACCEPTED[key]:
        if wanted == accepted.lower():
            return accepted
    return None
