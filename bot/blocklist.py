"""The per-server blocklist check: does a member's prompt use a term an admin has blocked?

This module owns how an admin's term and a member's prompt are compared. Both go through the
same folding, so whatever an admin types and whatever a member types meet in one spelling:

- Each character is folded to a plain skeleton: NFKC (fullwidth and mathematical letters become
  ASCII), a small table of Cyrillic/Greek/small-capital look-alikes, casefold, accents dropped,
  and invisible characters (zero-width, format, Hangul fillers) removed.
- The skeleton is cut into words at anything that is not a letter or digit. Single letters in a
  row ("b a d", "b.a.d", "b_a-d") are read as one spelled-out word, also after "a" or "I"
  ("draw a b a d ..."), but a term never matches inside one ("c l a s s" is not "ass").
- Digits and @ $ ! are read as letters (leetspeak) only in words that look like leetspeak rather
  than numbers, so "4k", "3d" and "1920s" stay numbers.
- A term matches whole words only, never part of one: blocking "ass" leaves "class" and
  "assistant" alone. Multi-word terms match across any separators, or written as one word.
  The last word may take a plural "s" ("es" after s, x, z, ch, sh).
- A letter may be stretched to three or more ("baaad"); a doubled letter is a spelling of its
  own, so blocking "god" does not block "good".

Matching is a dictionary lookup per word of the prompt (no regular expressions over the prompt,
so no backtracking), and the index of a rule set is built once and cached.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

MIN_TERM_CHARS = 2
MAX_TERM_CHARS = 100


@dataclass(frozen=True)
class BlockRule:
    term: str  # as the admin typed it, e.g. "bad word" or "gore"


@dataclass(frozen=True)
class BlockMatch:
    rule: BlockRule
    excerpt: str  # the part of the prompt that matched, as the member typed it


# --- Folding characters -------------------------------------------------------------------

# Letters that look like Latin ones but NFKC leaves alone. Upper-case entries are only for
# capitals that look different from their lower case (Greek Η is H, η is n).
_CONFUSABLES = {
    # Cyrillic
    "а": "a", "в": "b", "ь": "b", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "н": "h", "і": "i",
    "ј": "j", "к": "k", "ӏ": "l", "м": "m", "п": "n", "о": "o", "р": "p", "ԛ": "q", "г": "r",
    "ѕ": "s", "т": "t", "у": "y", "ү": "y", "х": "x", "ԝ": "w", "ѡ": "w",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o",
    "ρ": "p", "ϲ": "c", "ς": "c", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w",
    "Β": "b", "Η": "h", "Ν": "n", "Υ": "y", "Ζ": "z",
    # Latin letters with a stroke (no decomposition to drop) and "small capital" letters
    "ø": "o", "đ": "d", "ł": "l", "ħ": "h", "ı": "i", "ȷ": "j", "ŧ": "t", "ƀ": "b", "ɨ": "i",
    "ɑ": "a", "ɡ": "g", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g",
    "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p",
    "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
    # Apostrophes that are letters (Lm) would otherwise glue "bʼaʼd" into one word.
    "ʼ": "'", "ꞌ": "'",
}  # fmt: skip

# Letters (category Lo) that render as nothing, so the format-character rule misses them.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0")
# Marks (accents, enclosing circles) and format characters (zero-width space and joiners,
# soft hyphen, byte-order mark, tag characters) are dropped, not turned into separators, so
# that "g\u200bore" reads "gore".
_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})
_APOSTROPHES = frozenset("'’‘")


@functools.lru_cache(maxsize=8192)
def _fold_char(char: str) -> str:
    """One character's skeleton: zero, one or several lower-case plain characters."""
    # Look-alikes are mapped before casefolding (capitals differ) and after (their lower case).
    text = "".join(_CONFUSABLES.get(c, c) for c in unicodedata.normalize("NFKC", char))
    text = unicodedata.normalize("NFD", text.casefold())
    return "".join(
        _CONFUSABLES.get(c, c)
        for c in text
        if c not in _INVISIBLE and unicodedata.category(c) not in _DROPPED_CATEGORIES
    )


# --- Words --------------------------------------------------------------------------------

# Letters and digits (not "_", a separator), and the symbols leetspeak uses inside words.
_WORD_RE = re.compile(r"(?:[^\W_]|[@$!])+")


@dataclass(frozen=True)
class _Word:
    raw: str  # skeleton characters, digits and symbols not yet read as letters
    start: int  # where it starts in the original text
    end: int  # where it ends in the original text (exclusive)
    # For letters spelled out one by one: where the second one starts in the original text.
    second: int | None = None


def _skeleton(text: str) -> tuple[str, list[int]]:
    """The folded text, and for each of its characters the index it came from in `text`."""
    if text.isascii():  # most prompts: nothing to fold but case
        return text.lower(), list(range(len(text)))
    parts: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = _fold_char(char)
        parts.append(folded)
        origin.extend([index] * len(folded))
    return "".join(parts), origin


def _pieces(skeleton: str) -> list[tuple[int, int]]:
    """Spans of the skeleton made of word characters."""
    spans = []
    for found in _WORD_RE.finditer(skeleton):
        start, end = found.span()
        # "!" ends sentences far more often than it stands for an "i": only inside a word.
        while start < end and skeleton[start] == "!":
            start += 1
        while end > start and skeleton[end - 1] == "!":
            end -= 1
        if start < end:
            spans.append((start, end))
    return spans


def _is_contraction(skeleton: str, previous: tuple[int, int] | None, start: int) -> bool:
    """Whether a one-letter piece is the tail of a contraction: the "s" of "it's"."""
    if previous is None or previous[1] - previous[0] < 2:
        return False
    return start - previous[1] == 1 and skeleton[previous[1]] in _APOSTROPHES


def _words(text: str) -> list[_Word]:
    """The words of `text`, with runs of single letters ("b a d", "b.a.d") joined into one."""
    skeleton, origin = _skeleton(text)
    spans: list[tuple[int, int]] = []  # skeleton start and end of each word
    # A spelled-out run's letters and where its second letter is (its span holds separators).
    joined: list[tuple[list[str], list[int]] | None] = []
    previous: tuple[int, int] | None = None
    for start, end in _pieces(skeleton):
        single = end - start == 1 and not _is_contraction(skeleton, previous, start)
        run = joined[-1] if single and joined else None
        if run is not None:
            spans[-1] = (spans[-1][0], end)
            run[0].append(skeleton[start])
            run[1].append(start)
        else:
            spans.append((start, end))
            joined.append(([skeleton[start]], []) if single else None)
        previous = (start, end)

    has_marks = not text.isascii()
    words = []
    for (start, end), run in zip(spans, joined, strict=True):
        first, last = origin[start], origin[end - 1] + 1
        # Take in accents typed as separate marks after the last letter ("gore" + U+0301).
        while has_marks and last < len(text) and unicodedata.category(text[last]) in ("Mn", "Me"):
            last += 1
        if run is None or not run[1]:
            words.append(_Word(skeleton[start:end], first, last))
        else:
            words.append(_Word("".join(run[0]), first, last, origin[run[1][0]]))
    return words


def _starts_with_article(word: _Word) -> bool:
    return word.second is not None and word.raw[0] in "ai" and len(word.raw) > 2


def _articles_apart(words: list[_Word]) -> list[_Word] | None:
    """The words again with "a b a d" read as "a" + "bad", or None if no run starts that way.

    "a" and "I" are words of their own, and "draw a b a d ..." is the natural way to type a
    spelled-out word, but the article would glue onto it. Both readings are checked.
    """
    if not any(_starts_with_article(word) for word in words):
        return None
    apart = []
    for word in words:
        if _starts_with_article(word):
            assert word.second is not None  # a spelled-out word has a second letter
            apart.append(_Word(word.raw[0], word.start, word.start + 1))
            apart.append(_Word(word.raw[1:], word.second, word.end))
        else:
            apart.append(word)
    return apart


# --- Reading leetspeak ----------------------------------------------------------------------

_LEET = str.maketrans("013457@$!", "oieastasi")
_LEET_CHARS = frozenset("013457@$!")
# A number with a unit or an ordinal is a number, even when its digits could be letters.
_NUMBER_WITH_UNIT = re.compile(
    r"\d+(?:st|nd|rd|th|s|k|m|d|p|x|h|am|pm|mm|cm|km|px|fps|hz|kg|gb|mb|yo)"
)
# "1" reads as "i" or "l"; past a few of them a word is noise, and trying every way would
# double the work per "1".
_MAX_AMBIGUOUS = 3


def _reads_as_leet(raw: str) -> bool:
    """Whether a word's digits and symbols stand for letters ("b4d", "a$$") or for themselves.

    Short words are read as written: with one or two characters there is too little to tell
    "4k" from a disguised two-letter term. Digits without a letter reading (2, 6, 8, 9) mark a
    number or a model name ("1920s", "1080p", "h264"). A number needs a letter or two symbols
    besides, or "$500" and a Discord mention "<@55>" would read as words.
    """
    if len(raw) < 3 or _LEET_CHARS.isdisjoint(raw):
        return False
    letters = sum(c.isalpha() for c in raw)
    symbols = sum(c in "@$!" for c in raw)
    return (
        (letters >= 1 or symbols >= 2)
        and not any(c.isdigit() and c not in _LEET_CHARS for c in raw)
        and not _NUMBER_WITH_UNIT.fullmatch(raw)
    )


def _readings(raw: str) -> list[str]:
    """The ways a word can be read; the first is the one used for an admin's term."""
    readings = _leet_readings(raw)
    if "!" in raw:
        # "!" is also punctuation used as a separator: "b!a!d" is "bad" as much as "b.a.d" is.
        readings += [r for r in _leet_readings(raw.replace("!", "")) if r not in readings]
    return readings


def _leet_readings(raw: str) -> list[str]:
    if not _reads_as_leet(raw):
        return [raw]
    first = raw.translate(_LEET)
    ones = [index for index, char in enumerate(raw) if char == "1"][:_MAX_AMBIGUOUS]
    readings = []
    for letters in itertools.product("il", repeat=len(ones)):
        chars = list(first)
        for index, letter in zip(ones, letters, strict=True):
            chars[index] = letter
        readings.append("".join(chars))
    return readings


# --- Spellings and patterns ---------------------------------------------------------------


@dataclass(frozen=True)
class _Spelling:
    """A word with each run of one letter written once: "baaad" is ("bad", (1, 3, 1))."""

    letters: str
    counts: tuple[int, ...]


_REPEAT_RE = re.compile(r"(.)\1+", re.DOTALL)
_RUN_RE = re.compile(r"(.)\1*", re.DOTALL)


def _spell(word: str) -> _Spelling:
    letters = _REPEAT_RE.sub(r"\1", word)
    if len(letters) == len(word):  # most words repeat no letter
        return _Spelling(word, (1,) * len(word))
    return _Spelling(letters, tuple(len(run.group()) for run in _RUN_RE.finditer(word)))


# Both cached because prompts repeat their words.
@functools.lru_cache(maxsize=4096)
def _letters(raw: str) -> tuple[str, ...]:
    """The letters of each reading of a word, without repeats: what the index is keyed by."""
    return tuple(_REPEAT_RE.sub(r"\1", reading) for reading in _readings(raw))


@functools.lru_cache(maxsize=4096)
def _spellings(raw: str) -> tuple[_Spelling, ...]:
    return tuple(_spell(reading) for reading in _readings(raw))


@dataclass(frozen=True)
class _Pattern:
    """One word of a term as it must appear in a prompt."""

    letters: str
    counts: tuple[int, ...]
    stretchable: tuple[bool, ...]  # False for the letters of a plural ending

    def fits(self, spelling: _Spelling) -> bool:
        if spelling.letters != self.letters:
            return False
        return all(
            seen == wanted or (stretch and seen >= max(wanted, 3))
            for seen, wanted, stretch in zip(
                spelling.counts, self.counts, self.stretchable, strict=True
            )
        )


def _pattern(word: str, ending: str = "") -> _Pattern:
    spelling = _spell(word + ending)
    base_runs = len(_spell(word).letters)
    stretchable = tuple(index < base_runs for index in range(len(spelling.letters)))
    return _Pattern(spelling.letters, spelling.counts, stretchable)


def _plural_ending(word: str) -> str:
    # Regular English plurals only: "ies" and irregular plurals would need a dictionary. "es"
    # only where English puts it, or blocking "hat" would block "hates".
    return "es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s"


def _forms(words: list[str]) -> list[tuple[_Pattern, ...]]:
    """The word sequences a term matches: as typed, plural, and (multi-word) run together."""
    *head, last = words
    forms = [
        (*(_pattern(word) for word in head), _pattern(last)),
        (*(_pattern(word) for word in head), _pattern(last, _plural_ending(last))),
    ]
    if head:
        joined = "".join(words)
        forms.append((_pattern(joined),))
        forms.append((_pattern(joined, _plural_ending(last)),))
    return forms


@dataclass(frozen=True)
class _Form:
    rule_index: int
    words: tuple[_Pattern, ...]


# --- Public API ---------------------------------------------------------------------------


def normalize_term(term: str) -> str:
    """The canonical form of an admin's term: two spellings that match alike store alike."""
    if len(term.strip()) > MAX_TERM_CHARS:
        raise ValueError(f"A blocked term can be at most {MAX_TERM_CHARS} characters long.")
    words = [_readings(word.raw)[0] for word in _words(term)]
    if sum(char.isalnum() for word in words for char in word) < MIN_TERM_CHARS:
        raise ValueError(f"A blocked term needs at least {MIN_TERM_CHARS} letters or digits.")
    return " ".join(words)


@functools.lru_cache(maxsize=32)
def _index(rules: tuple[BlockRule, ...]) -> dict[str, list[_Form]]:
    """Forms of every rule, keyed by the letters of their first word."""
    index: dict[str, list[_Form]] = {}
    for rule_index, rule in enumerate(rules):
        try:
            words = normalize_term(rule.term).split(" ")
        except ValueError:
            # A term saved before validation existed cannot match sensibly; skip, don't fail
            # every prompt on the server.
            log.warning("Skipping an invalid blocklist term of %d characters", len(rule.term))
            continue
        for words_form in _forms(words):
            index.setdefault(words_form[0].letters, []).append(_Form(rule_index, words_form))
    return index


def _first_match(words: list[_Word], index: dict[str, list[_Form]]) -> tuple[int, int, int] | None:
    """The earliest rule that matches, as (rule index, start, end in the original text)."""
    best: tuple[int, int, int] | None = None
    for first, word in enumerate(words):
        # Only a word whose letters start some term is spelled out in full.
        for letters in _letters(word.raw):
            for form in index.get(letters, ()):
                # Words are scanned in order, so a later hit only wins with an earlier rule.
                if best is not None and form.rule_index >= best[0]:
                    continue
                end = first + len(form.words)
                if end <= len(words) and all(
                    any(pattern.fits(option) for option in _spellings(words[first + offset].raw))
                    for offset, pattern in enumerate(form.words)
                ):
                    best = (form.rule_index, word.start, words[end - 1].end)
    return best


def find_blocked(prompt: str, rules: Sequence[BlockRule]) -> BlockMatch | None:
    """The first rule (in list order) that the prompt matches, with where it matched."""
    index = _index(tuple(rules))
    if not index:
        return None
    words = _words(prompt)
    candidates = [_first_match(words, index)]
    apart = _articles_apart(words)
    if apart is not None:
        candidates.append(_first_match(apart, index))
    found = [candidate for candidate in candidates if candidate is not None]
    if not found:
        return None
    rule_index, start, end = min(found)
    return BlockMatch(rules[rule_index], prompt[start:end])
