"""The per-server blocklist check: does a member's prompt use a term an admin has blocked?

This module owns how an admin's term and a member's prompt are compared. Both go through the
same folding, so whatever an admin types and whatever a member types meet in one spelling:

- Each character is folded to a plain skeleton: NFKC (fullwidth, mathematical, circled and
  superscript letters become ASCII), a table of look-alikes (Cyrillic, Greek, Armenian,
  Cherokee, Lisu, "small capital" letters, letter emoji such as 🅶 and 🇬), casefold, accents
  dropped, and invisible characters (zero-width, format, Hangul fillers) removed. A capital I
  and the strokes that look like it (ӏ, ǀ) read as either "i" or "l" ("kiII", "BIood").
- A word written wholly in Cyrillic, Greek or Armenian is a word of that language and keeps
  its letters: Russian "рот" (mouth) is not "pot". A word that mixes scripts ("gօre", "рot"),
  or uses a Cyrillic letter that the big Cyrillic languages hardly use but look-alike fonts do
  (ѕ ӏ ԁ һ ԛ ԝ ...), is read with its look-alikes folded. So is a lone letter that is not next
  to such a word ("ѕ һ і т").
- The skeleton is cut into words at anything that is not a letter or digit. Single letters in a
  row ("b a d", "b.a.d", "b_a-d") are read as one spelled-out word, also after "a" or "I"
  ("draw a b a d ..."), but a term never matches inside one ("c l a s s" is not "ass").
- Two or three words in a row with only spaces, dots, dashes or underscores between them are
  also read as one word ("go re", "k ill", "wh.ite"), unless every one of them is a common word
  on its own ("hero in" is not "heroin", "a SS officer" is not "ass"), or the last heads a
  hyphenated word ("as S-shaped").
- Digits and the symbols @ $ ! | € £ ¢ § ¡ are read as letters (leetspeak: "9ore", "k|ll") only
  in words that look like leetspeak: three characters or more, with a letter or two symbols,
  and neither a number with a unit ("4k", "3d", "35mm", "1920s") nor one letter and a number,
  which is a model name ("Galaxy A55", "B52").
- A term matches whole words only, never part of one: blocking "ass" leaves "class" and
  "assistant" alone. The words of a multi-word term must follow each other with nothing but
  spaces, dashes, underscores or a dot inside a word between them ("white power",
  "white-power", "white.power"), or be written as one word ("whitepower"); a comma, colon,
  semicolon, bracket, quote, slash or the end of a sentence between them breaks the phrase
  ("black and white, power lines"). The last word may take a plural "s" ("es" after s, x, z,
  ch, sh).
- A letter the term has once may be doubled or stretched ("gorre", "baaad"), unless the word
  then reads as a common word with that letter doubled: "good" and "goood" are "good", not
  "god", and German "hatte" is not "hate". A letter the term has twice may be stretched, never
  written once ("kil" is not "kill").

Matching is a few dictionary lookups per word of the prompt (the word, and the word with the next
one or two glued on; no regular expressions over the prompt, so no backtracking), and the index
of a rule set is built once and cached.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import unicodedata
from collections.abc import Iterator, Sequence
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

# Letters that look like Latin ones but NFKC leaves alone, after Unicode's confusables.txt.
# Upper-case entries are only for capitals that look different from their lower case (Greek Η
# is H, η is n); Cherokee letters casefold to capitals, so only those are listed.
_CONFUSABLES = {
    # Cyrillic (including the look-alikes "faux Cyrillic" lettering uses: Я for R, И for N)
    "а": "a", "в": "b", "ь": "b", "б": "b", "с": "c", "ԁ": "d", "е": "e", "є": "e", "э": "e",
    "ҽ": "e", "ԍ": "g", "һ": "h", "н": "h", "і": "i", "ꙇ": "i", "ј": "j", "к": "k", "ӏ": "ı",
    "м": "m", "п": "n", "и": "n", "о": "o", "р": "p", "ԛ": "q", "г": "r", "я": "r", "ѕ": "s",
    "т": "t", "ц": "u", "ѵ": "v", "ш": "w", "ԝ": "w", "ѡ": "w", "х": "x", "у": "y", "ү": "y",
    # Greek
    "α": "a", "β": "b", "ϐ": "b", "ϲ": "c", "ς": "c", "δ": "d", "ε": "e", "ϵ": "e", "η": "n",
    "π": "n", "ι": "i", "ϳ": "j", "κ": "k", "ϰ": "k", "μ": "u", "ν": "v", "ο": "o", "σ": "o",
    "θ": "o", "ρ": "p", "ϱ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w", "ζ": "z",
    "Β": "b", "Η": "h", "Μ": "m", "Ν": "n", "Υ": "y", "ϒ": "y", "Ζ": "z", "Γ": "r", "Σ": "e",
    "Δ": "a", "Λ": "a", "Ϲ": "c", "Ϝ": "f", "Ϳ": "j",
    # Armenian
    "ա": "w", "գ": "q", "զ": "q", "ց": "g", "հ": "h", "ո": "n", "ռ": "n", "ս": "u", "օ": "o",
    "ք": "f", "Տ": "s",
    # Cherokee
    "Ꭺ": "a", "Ᏼ": "b", "Ꮟ": "b", "Ꮯ": "c", "Ꭰ": "d", "Ꮷ": "d", "Ꭼ": "e", "Ꮐ": "g", "Ᏻ": "g",
    "Ꮋ": "h", "Ꮒ": "h", "Ꭵ": "i", "Ꭻ": "j", "Ꮶ": "k", "Ꮮ": "l", "Ꮇ": "m", "Ꮲ": "p", "Ꭱ": "r",
    "Ꮢ": "r", "Ꮁ": "r", "Ꮪ": "s", "Ꮥ": "s", "Ꭲ": "t", "Ꮩ": "v", "Ꮃ": "w", "Ꮤ": "w", "Ꭹ": "y",
    "Ꮍ": "y", "Ꮓ": "z",
    # Lisu
    "ꓮ": "a", "ꓐ": "b", "ꓚ": "c", "ꓓ": "d", "ꓒ": "d", "ꓰ": "e", "ꓝ": "f", "ꓖ": "g", "ꓧ": "h",
    "ꓲ": "ı", "ꓙ": "j", "ꓗ": "k", "ꓡ": "l", "ꓟ": "m", "ꓠ": "n", "ꓳ": "o", "ꓑ": "p", "ꓣ": "r",
    "ꓢ": "s", "ꓔ": "t", "ꓴ": "u", "ꓦ": "v", "ꓪ": "w", "ꓫ": "x", "ꓬ": "y", "ꓜ": "z",
    # Latin letters with a stroke or hook (no decomposition to drop) and "small capital" letters
    "ø": "o", "đ": "d", "ł": "l", "ħ": "h", "ȷ": "j", "ŧ": "t", "ƀ": "b", "ɨ": "i",
    "ɩ": "i", "ǀ": "ı", "Ɩ": "ı", "ƽ": "s", "ʋ": "u", "ꞟ": "u", "ɯ": "w", "ɣ": "y", "ꭇ": "r",
    "ƅ": "b", "Ƅ": "b",
    "ɑ": "a", "ɡ": "g", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g",
    "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p",
    "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
    # A capital I is a plain stroke, like a small l in most fonts ("kiII", "BIood"): it, and its
    # look-alikes, fold to a dotless ı, read as either letter.
    "I": "ı", "Ι": "ı", "І": "ı", "Ӏ": "ı",
    # Apostrophes that are letters (Lm) would otherwise glue "bʼaʼd" into one word.
    "ʼ": "'", "ꞌ": "'",
}  # fmt: skip

# Symbols that are letters A to Z in a frame and have no NFKC decomposition: regional
# indicators (🇦, pairs show as flags), negative circled (🅐) and negative squared (🅰) letters.
_LETTER_SYMBOL_BLOCKS = (0x1F1E6, 0x1F150, 0x1F170)

# Scripts with many writers whose ordinary words can look like Latin ones ("рот", "ποτό").
_NATIVE_SCRIPTS = frozenset({"CYRILLIC", "GREEK", "ARMENIAN"})
# Cyrillic and Greek letters that look-alike fonts use far more than any big language does: a
# word with one of them is read as a disguise even when all its letters are Cyrillic ("ѕех").
_LOOKALIKE_ONLY = frozenset("ѕӏӀԁԀԛԚԝԜѡѠһҺԍԌҽꙇѵѴϲϹϳϿϐϵϱϰϒ")

# Letters (category Lo) that render as nothing, so the format-character rule misses them.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0")
# Marks (accents, enclosing circles) and format characters (zero-width space and joiners,
# soft hyphen, byte-order mark, tag characters) are dropped, not turned into separators, so
# that "g\u200bore" reads "gore".
_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})
_APOSTROPHES = frozenset("'’‘")

# Symbols read as letters in leetspeak, and the digits; "!", "|" and "¡" are also punctuation,
# so they count only inside a word.
_LEET_SYMBOLS = frozenset("@$!|€£¢§¡")
_EDGE_SYMBOLS = "!|¡"
_LEET_CHARS = frozenset("0123456789") | _LEET_SYMBOLS


@functools.lru_cache(maxsize=8192)
def _fold_char(char: str, native: bool = False) -> str:
    """One character's skeleton: zero, one or several lower-case plain characters.

    `native` is for a letter of a word written wholly in one of `_NATIVE_SCRIPTS`: it keeps its
    script, only case and accents are folded.
    """
    table = {} if native else _CONFUSABLES
    code = ord(char)
    for block in _LETTER_SYMBOL_BLOCKS:
        if block <= code < block + 26:
            return chr(ord("a") + code - block)
    # Look-alikes are mapped before casefolding (capitals differ) and after (their lower case).
    text = "".join(table.get(c, c) for c in unicodedata.normalize("NFKC", char))
    text = unicodedata.normalize("NFD", text.casefold())
    return "".join(
        table.get(c, c)
        for c in text
        if c not in _INVISIBLE and unicodedata.category(c) not in _DROPPED_CATEGORIES
    )


@functools.lru_cache(maxsize=8192)
def _script(char: str) -> str | None:
    """What a character is to the script of its word.

    The script's name for a letter ("LATIN", "CYRILLIC"), "" for a mark or an invisible
    character (part of the word, no script of its own), "OTHER" for a digit, a leet symbol or a
    look-alike-only letter (they make a word mixed), None for a separator.
    """
    if char in _LOOKALIKE_ONLY or (char in _LEET_SYMBOLS and char not in _EDGE_SYMBOLS):
        return "OTHER"
    if char in _INVISIBLE or unicodedata.category(char) in _DROPPED_CATEGORIES:
        return ""
    if char.isalpha():
        return unicodedata.name(char, "OTHER").split(" ", 1)[0]
    return "OTHER" if char.isdigit() else None


def _native_positions(text: str) -> frozenset[int]:
    """Where the letters of words written wholly in one of `_NATIVE_SCRIPTS` are.

    A word of one letter is native only next to a native word of several ("кот и пёс"): alone
    among Latin words, or among other single letters ("ѕ һ і т"), it spells out a disguise.
    """
    words: list[tuple[int, int, bool, int]] = []  # start, end, in one native script, letters
    start, scripts, letters = 0, set[str](), 0
    for index, char in enumerate(f"{text} "):  # the space ends the last word
        script = _script(char)
        if script is None:
            if index > start:
                one_native = len(scripts) == 1 and scripts <= _NATIVE_SCRIPTS
                words.append((start, index, one_native, letters))
            start, scripts, letters = index + 1, set(), 0
        elif script:
            scripts.add(script)
            letters += 1
    native: list[int] = []
    for number, (start, end, one_native, letters) in enumerate(words):
        if one_native and (
            letters > 1
            or any(
                0 <= other < len(words) and words[other][2] and words[other][3] > 1
                for other in (number - 1, number + 1)
            )
        ):
            native.extend(range(start, end))
    return frozenset(native)


# --- Words --------------------------------------------------------------------------------

# Letters and digits (not "_", a separator), and the symbols leetspeak uses inside words.
_WORD_RE = re.compile(r"(?:[^\W_]|[@$!|€£¢§¡])+")


@dataclass(frozen=True)
class _Word:
    raw: str  # skeleton characters, digits and symbols not yet read as letters
    start: int  # where it starts in the original text
    end: int  # where it ends in the original text (exclusive)
    # For letters spelled out one by one: where the second one starts in the original text.
    second: int | None = None
    gap: str = ""  # what stands between the previous word and this one, as typed


def _skeleton(text: str) -> tuple[str, list[int]]:
    """The folded text, and for each of its characters the index it came from in `text`."""
    if text.isascii():  # most prompts: nothing to fold but case (and the capital I)
        return text.replace("I", "ı").lower(), list(range(len(text)))
    native = _native_positions(text)
    parts: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = _fold_char(char, index in native)
        parts.append(folded)
        origin.extend([index] * len(folded))
    return "".join(parts), origin


def _pieces(skeleton: str) -> list[tuple[int, int]]:
    """Spans of the skeleton made of word characters."""
    spans = []
    for found in _WORD_RE.finditer(skeleton):
        start, end = found.span()
        # "!" ends sentences and "|" separates lists far more often than they stand for an
        # "i" or an "l": only inside a word.
        while start < end and skeleton[start] in _EDGE_SYMBOLS:
            start += 1
        while end > start and skeleton[end - 1] in _EDGE_SYMBOLS:
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
    words: list[_Word] = []
    for (start, end), run in zip(spans, joined, strict=True):
        first, last = origin[start], origin[end - 1] + 1
        # Take in accents typed as separate marks after the last letter ("gore" + U+0301).
        while has_marks and last < len(text) and unicodedata.category(text[last]) in ("Mn", "Me"):
            last += 1
        gap = text[words[-1].end if words else 0 : first]
        if run is None or not run[1]:
            words.append(_Word(skeleton[start:end], first, last, gap=gap))
        else:
            words.append(_Word("".join(run[0]), first, last, origin[run[1][0]], gap))
    return words


def _starts_with_article(word: _Word) -> bool:
    return word.second is not None and word.raw[0] in "aiı"


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
            apart.append(_Word(word.raw[0], word.start, word.start + 1, gap=word.gap))
            apart.append(_Word(word.raw[1:], word.second, word.end, gap=" "))
        else:
            apart.append(word)
    return apart


# --- What stands between words --------------------------------------------------------------

# Punctuation that ends a clause or a list item: the words on either side are not one phrase.
_PHRASE_BREAKS = frozenset(',;:?!()[]{}<>"“”„«»‹›…/|\\。、')
_SENTENCE_END = re.compile(r"\.\s")
# What may stand between the fragments of one word ("go re", "k-ill", "wh.ite"), besides spaces.
_GLUE = frozenset(".-_*~·•‐‑‒–\u2800")
# A fragment is a word cut out of another; more than three pieces read too many word pairs.
_MAX_FRAGMENTS = 3


@functools.lru_cache(maxsize=1024)
def _continues_phrase(gap: str) -> bool:
    """Whether the words on either side of `gap` can be two words of one term."""
    if not gap.isascii():
        gap = unicodedata.normalize("NFKC", gap)
    return _PHRASE_BREAKS.isdisjoint(gap) and not _SENTENCE_END.search(gap)


@functools.lru_cache(maxsize=1024)
def _glues(gap: str) -> bool:
    """Whether the words on either side of `gap` can be pieces of one word."""
    return (
        0 < len(gap) <= 3
        and all(c in _GLUE or (c.isspace() and c not in "\n\r") for c in gap)
        and _continues_phrase(gap)
    )


def _is_common(word: _Word) -> bool:
    return word.second is None and word.raw.replace("ı", "i") in _COMMON_WORDS


def _heads_compound(words: Sequence[_Word], index: int) -> bool:
    """Whether a word is joined by a hyphen to the next: the "S" of "S-shaped", "re-enter"."""
    return index + 1 < len(words) and words[index + 1].gap in ("-", "‐", "‑")


def _fragments(words: Sequence[_Word], first: int) -> Iterator[tuple[str, int]]:
    """A word, then the same word with the next one or two glued on (as raw, index after).

    Pieces glue only when at least one of them is not a common word on its own: "go re" is
    "gore", "hero in" stays two words.
    """
    raw = words[first].raw
    yield raw, first + 1
    all_common = _is_common(words[first])
    for after in range(first + 1, min(first + _MAX_FRAGMENTS, len(words))):
        word = words[after]
        if not _glues(word.gap) or _heads_compound(words, after):
            return
        raw += word.raw
        all_common = all_common and _is_common(word)
        if not all_common:
            yield raw, after + 1


# --- Reading leetspeak ----------------------------------------------------------------------

_LEET = str.maketrans("0123456789@$!|€£¢§¡ı", "oizeasgtbgasiielcsii")
# Characters with two letter readings; the first is the one _LEET gives. The dotless ı (a
# capital I or a look-alike stroke) is a letter, read both ways in any word.
_AMBIGUOUS = {"1": "il", "|": "il", "6": "gb", "ı": "il"}
_WITHOUT_EDGE_SYMBOLS = str.maketrans("", "", _EDGE_SYMBOLS)
# A number with a unit or an ordinal is a number, even when its digits could be letters.
_NUMBER_WITH_UNIT = re.compile(
    r"\d+(?:st|nd|rd|th|s|k|m|d|p|x|h|am|pm|mm|cm|km|px|fps|hz|khz|mhz|ghz|kg|gb|mb|tb|yo|mp|w"
    r"|kw|ml|ms|mph|hp|dpi|ppi|bit)"
)
# One letter and a number is a model name ("A55", "B52", "F16"), not a disguised word.
_MODEL_NAME = re.compile(r"[^\W\d_]\d+")
# Past a few ambiguous characters a word is noise, and trying every way would double the work
# per character.
_MAX_AMBIGUOUS = 3


def _reads_as_leet(raw: str) -> bool:
    """Whether a word's digits and symbols stand for letters ("b4d", "a$$") or for themselves.

    Short words are read as written: with one or two characters there is too little to tell
    "4k" from a disguised two-letter term. A number needs a letter or two symbols besides, or
    "$500" and a Discord mention "<@55>" would read as words; with a unit ("1920s", "1080p") or
    after a single letter ("A55") it is a number.
    """
    if len(raw) < 3 or _LEET_CHARS.isdisjoint(raw):
        return False
    letters = sum(c.isalpha() for c in raw)
    symbols = sum(c in _LEET_SYMBOLS for c in raw)
    return (
        (letters >= 1 or symbols >= 2)
        and not _NUMBER_WITH_UNIT.fullmatch(raw)
        and not _MODEL_NAME.fullmatch(raw)
    )


def _readings(raw: str) -> list[str]:
    """The ways a word can be read; the first is the one used for an admin's term."""
    readings = _leet_readings(raw)
    bare = raw.translate(_WITHOUT_EDGE_SYMBOLS)
    if bare and bare != raw:
        # "!" and "|" are also punctuation used as separators: "b!a!d" is "bad" as much as
        # "b.a.d" is.
        readings += [r for r in _leet_readings(bare) if r not in readings]
    return readings


def _leet_readings(raw: str) -> list[str]:
    if _reads_as_leet(raw):
        first = raw.translate(_LEET)
        ambiguous = [index for index, char in enumerate(raw) if char in _AMBIGUOUS]
    elif "ı" in raw:
        first = raw.replace("ı", "i")
        ambiguous = [index for index, char in enumerate(raw) if char == "ı"]
    else:
        return [raw]
    ambiguous = ambiguous[:_MAX_AMBIGUOUS]
    readings = []
    for letters in itertools.product(*(_AMBIGUOUS[raw[index]] for index in ambiguous)):
        chars = list(first)
        for index, letter in zip(ambiguous, letters, strict=True):
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
        doubled = []  # letters the term has once and the prompt has more often
        for index, (seen, wanted, stretch) in enumerate(
            zip(spelling.counts, self.counts, self.stretchable, strict=True)
        ):
            if seen == wanted:
                continue
            if seen < wanted or not stretch:
                return False
            if wanted == 1:
                doubled.append(index)
        return not doubled or not _doubling_makes_a_word(self, tuple(doubled))


# A word doubles at most this many letters of a term before its other readings are not tried.
_MAX_DOUBLED = 4


@functools.lru_cache(maxsize=1024)
def _doubling_makes_a_word(pattern: _Pattern, doubled: tuple[int, ...]) -> bool:
    """Whether doubling some of these letters of a term spells a common word ("god": "good")."""
    for size in range(1, min(len(doubled), _MAX_DOUBLED) + 1):
        for chosen in itertools.combinations(doubled[:_MAX_DOUBLED], size):
            word = "".join(
                letter * (2 if index in chosen else count)
                for index, (letter, count) in enumerate(
                    zip(pattern.letters, pattern.counts, strict=True)
                )
            )
            if (
                word in _DOUBLED_WORDS
                or (word.endswith("s") and word[:-1] in _DOUBLED_WORDS)
                or (word.endswith("es") and word[:-2] in _DOUBLED_WORDS)
            ):
                return True
    return False


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


class UnusableTerm(ValueError):
    """A term too long, or with too few letters or digits, to block."""

    def __init__(self, *, too_long: bool, limit: int) -> None:
        super().__init__(
            f"A blocked term can be at most {limit} characters long."
            if too_long
            else f"A blocked term needs at least {limit} letters or digits."
        )
        self.too_long = too_long
        self.limit = limit


def normalize_term(term: str) -> str:
    """The canonical form of an admin's term: two spellings that match alike store alike."""
    if len(term.strip()) > MAX_TERM_CHARS:
        raise UnusableTerm(too_long=True, limit=MAX_TERM_CHARS)
    words = [_readings(word.raw)[0] for word in _words(term)]
    if sum(char.isalnum() for word in words for char in word) < MIN_TERM_CHARS:
        raise UnusableTerm(too_long=False, limit=MIN_TERM_CHARS)
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


def _fits(pattern: _Pattern, raw: str) -> bool:
    return any(pattern.fits(spelling) for spelling in _spellings(raw))


def _rest_matches(
    words: list[_Word], patterns: tuple[_Pattern, ...], done: int, position: int
) -> int | None:
    """Where the words matching `patterns[done:]` from `position` end, or None."""
    if done == len(patterns):
        return position
    if position >= len(words) or not _continues_phrase(words[position].gap):
        return None
    for raw, after in _fragments(words, position):
        if _fits(patterns[done], raw):
            end = _rest_matches(words, patterns, done + 1, after)
            if end is not None:
                return end
    return None


def _first_match(words: list[_Word], index: dict[str, list[_Form]]) -> tuple[int, int, int] | None:
    """The earliest rule that matches, as (rule index, start, end in the original text)."""
    best: tuple[int, int, int] | None = None
    for first, word in enumerate(words):
        for raw, after in _fragments(words, first):
            # Only a word whose letters start some term is spelled out in full.
            for letters in _letters(raw):
                for form in index.get(letters, ()):
                    # Words are scanned in order, so a later hit only wins with an earlier rule.
                    if best is not None and form.rule_index >= best[0]:
                        continue
                    if not _fits(form.words[0], raw):
                        continue
                    end = _rest_matches(words, form.words, 1, after)
                    if end is not None:
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


# --- Word lists -----------------------------------------------------------------------------


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Common short words (English, and the function words of the other languages prompts come
# in). Two or three of them in a row are read as the words they are, never glued into one:
# "hero in" is not "heroin". Abbreviations that stand alone in prompts are words too ("a SS
# officer").
_COMMON_WORDS = _word_set(
    """
    a i o am an as at be by do go he if in is it me my no of oh ok on or so to up us we ye
    all and any are art ask bad bag bar bay bed bee big bit box boy bus but buy can cap car
    cat cow cry cup cut dad day did die dog dot dry due ear eat egg end era eye far fat few
    fig fit fix fly for fox fun fur gap gas get got gun guy had has hat her hey him his hit
    hot how hub hue ice ill ink inn its jam jar jet job joy key kid kit lab lap law lay leg
    let lid lie lip lit log lot low mad man map mat may men mix mom mud mug net new nor not
    now nut oak odd off oil old one orb ore our out owl own pan paw pay pen pet pie pig pin
    pit pop put ran rat raw ray red rib rid rod row rub rug run sad saw say sea see set she
    shy sit six ski sky son spa sun tab tag tan tap tea ten the tie tin tip toe ton too top
    toy try two use van war was way web wet who why win wok won yes yet you zoo
    able also back ball band bank barn base bath bean bear beat bell belt best bike bird
    blue boat body bone book boot born both bowl bull burn bush busy cafe cake call calm came
    camp card care cart case cave cell chat chin city clay club coal coat code coin cold come
    cook cool corn cost crab crew crop cube cute dark dawn deal dear deep deer desk dirt disk
    dive does done door dove down draw drop drum duck dune dust duty each east easy edge else
    epic even ever face fact fair fall farm fast fear feel feet fern file fill film find fine
    fire fish five flag flat flow foam fold folk food foot fork form fort four free frog from
    full fuse gate gear gift girl give glow goal goat gold golf gone good gown gray green grey
    grid grow hair half hall hand hang hard harp have hawk head heal hear heat held helm help
    herb here hero hide high hill hold hole home hood hook hope horn host hour huge hunt idea
    into iron item jade jazz jump just keep kind king kite knee knot lace lady lake lamp land
    lane last late lava lawn lead leaf lean left lens life lift like lily lime line lion list
    live load loaf lock long look loop lord lost loud love luck made mail main make mall many
    mare mark mask mass meal meet melt menu mild milk mill mind mine mint mist mode mood moon
    more moss most moth move much must myth nail name navy near neck need nest news next nice
    nine none noon nose note oval over pack page paid pail pain pair palm park part pass past
    path peak pear pine pink pipe plan play plot plum poem poet pond pool poor port pose post
    pull pure push race rain ramp rare read real reed reef rest rice rich ride ring rise risk
    road rock role roll roof room root rope rose ruby rule rush rust safe sage said sail salt
    same sand save seal seat seed seen self sell ship shoe shop shot show shut side sign silk
    sing sink size skin slow snow soap sock sofa soft soil sold some song soon soup sour spot
    star stay stem step stew stop such suit sure swan tail take tale talk tall tank tape task
    team tear tell tent test text than that them then they thin this tide tile time tiny tire
    toad tofu told tone tool toss tour town tram tree trip true tube tune turn twin type unit
    upon used vase vast veil very vest view vine void vote wait wake walk wall wand want warm
    wave weak wear week well went were west what when whom wide wife wild will wind wine wing
    wire wise wish with wolf wood wool word work worm wrap yard yarn year yoga your zero zone
    about above after again along angel apple baby beach black bread brown candy chair
    child cloud coast color dream early earth field fresh front glass grass happy heart
    heavy horse house human large laser light lunch magic metal model money month mouse night
    north ocean other paint paper party peace plant power queen quiet radio river robot round
    royal rural scene school shape sharp sheep shell short sight silver sleep small smile
    smoke snake south space speech stone storm story sugar sweet table their there these
    thick thing those three tiger today tower train under urban water whale wheat where which
    while white whole woman women world young
    hate hates heroes speed shooting power
    cgi dj dr hd jr mr mrs ms pc sr ss st tv uk ui usa ux vr vs
    al del la las le les los lo se su sus un una uno unos unas y con por para sin sobre que
    muy mas mi tu yo nos es era fue ser hay
    au aux avec ce ces cet cette dans des du elle en est et il ils je ma mes mon ne nous ou
    par pas pour qui sa ses sur ta ton tres une vous
    am auf aus bei das dem den der des die du ein eine einem einen einer er es fur im ist
    mit nach nicht noch ob oder sie so uber um und vom von vor wie wir zu zum zur
    da di dei della gli ho non nel nella per piu tra fra che
    ao as com da das do dos em na nas no nos os um uma
    een en het op van met bij naar
    """
)

# Common words with a doubled letter. A word whose doubled letter a term has once is read as
# one of these rather than as the term: "good" is not "god", German "hatte" is not "hate".
_DOUBLED_WORDS = _word_set(
    """
    add all apple arrow baby balloon ball bass bee beef been beer beet bell berry better
    bill bitter blood bloom book boom boost boot boss bottle bottom brass bubble bull butter
    button buzz call carrot cell cherry chess chill cliff cocoon coffee collar comma cook
    cookie cool coop copper cotton cross cuff deep deer dinner doll door dress dull egg error
    fall fee feed feel feet fell fill floor flood food fool foot free freeze fuzz glass
    glee goo good goods goose grass green greet grill gull hall happy hill hood hook hoop
    hoot hull inn jazz jeep jelly keen keep kill kiss kitten knee knock ladder letter little
    look loop loose loot loss mall matte meet mellow merry mess middle mill miss mood moon
    moss muddy mummy need noodle nook noon odd off pass peek peel peer pepper pill pizza poll
    pool poor poppy press pretty pull puppy purr putt queen rabbit reef reel roll room root
    rubber saddle sell seed seek seem seen sheep sheet shell shoot skill skull sleep sleeve
    small smell snoop soon spell spill spoon staff steel steep steer still stool street
    stuff summer sweet swell tall teen teeth tell three till toll too took tool tooth tree
    troll valley wall wedding week weed well wheel whizz will wood wool woot yell zoo zoom
    hoof hood soot boom doom loom bloom broom gloom groom root proof roof woof
    weep creep cheek geek sleek reed greed breed deed heed need weed
    seep peep
    potts pott poot pooch
    hatte hatten kommen immer alle alles dann denn wenn muss dass mann sonne wasser bett
    gott stadt mutter himmel sommer zimmer schiff fluss wolle kette tasse kaffee hoff
    belle elle cette homme femme pomme terre pierre ville fille guerre verre bonne personne
    classe tasse bouteille nouvelle
    calle llama perro tierra guerra carro arroz pollo silla estrella bello bella ella lluvia
    gatto notte latte cappello palla mamma donna anno tutto sette otto fatto ragazzo sorella
    meer zee boom maan deur oor goed
    """
)
