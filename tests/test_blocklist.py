"""The blocklist check: disguised terms are caught, innocent words that contain one are not.

Besides the cases below, the corpus in tests/blocklist_corpus.py measures the catch rate and the
refusal rate on every run, against the targets the README states.
"""

from __future__ import annotations

import re

import pytest

from bot.blocklist import (
    MAX_TERM_CHARS,
    BlockMatch,
    BlockRule,
    find_blocked,
    normalize_term,
)
from bot.moderation import LONG_PROMPT, blocked_in
from tests.blocklist_corpus import EVASIONS, INNOCENT, TERMS

# The targets: at least this share of EVASIONS caught, at most this share of INNOCENT refused.
CATCH_TARGET = 0.97
REFUSAL_LIMIT = 0.005


def _rules(*terms: str) -> list[BlockRule]:
    return [BlockRule(term) for term in terms]


@pytest.mark.parametrize(
    ("prompt", "term", "excerpt"),
    [
        # As typed, and in any case
        ("a gore scene", "gore", "gore"),
        ("a GoRe scene", "gore", "GoRe"),
        ("a gore scene", "GORE", "gore"),
        # Accents, precomposed or typed as separate marks
        ("a gôré scene", "gore", "gôré"),
        ("a gore\u0301 scene", "gore", "gore\u0301"),
        ("a gore scene", "gôré", "gore"),
        # Look-alike letters from other scripts
        ("a gоrе scene", "gore", "gоrе"),  # Cyrillic о and е
        ("a gοrε scene", "gore", "gοrε"),  # Greek omicron and epsilon
        ("ВАD idea", "bad", "ВАD"),  # Cyrillic capitals
        ("ꜱᴘʟᴀᴛᴛᴇʀ", "splatter", "ꜱᴘʟᴀᴛᴛᴇʀ"),  # "small capitals" font
        ("ｇｏｒｅ art", "gore", "ｇｏｒｅ"),  # fullwidth
        ("𝐛𝐚𝐝 day", "bad", "𝐛𝐚𝐝"),  # mathematical bold
        ("𝓰𝓸𝓻𝓮", "gore", "𝓰𝓸𝓻𝓮"),  # mathematical script
        ("a gօre scene", "gore", "gօre"),  # Armenian օ
        ("a Ꮐore scene", "gore", "Ꮐore"),  # Cherokee Ꮐ
        ("🇬🇴🇷🇪", "gore", "🇬🇴🇷🇪"),  # regional indicators
        ("ⓖⓞⓡⓔ art", "gore", "ⓖⓞⓡⓔ"),  # circled
        ("ѕех", "sex", "ѕех"),  # all Cyrillic, but with letters only look-alike fonts use
        ("рοt", "pot", "рοt"),  # Cyrillic р and Greek ο: mixed scripts
        # Invisible characters inside the word
        ("g\u200dore", "gore", "g\u200dore"),  # zero-width joiner
        ("g\u200bo\u2060r\u00ade", "gore", "g\u200bo\u2060r\u00ade"),  # ZWSP, word joiner, SHY
        ("go\u3164re", "gore", "go\u3164re"),  # Hangul filler, a "letter" that shows nothing
        # Letters spelled out with separators
        ("very b a d idea", "bad", "b a d"),
        ("very b.a.d idea", "bad", "b.a.d"),
        ("very b_a-d idea", "bad", "b_a-d"),
        ("very b/a/d!", "bad", "b/a/d"),
        ("g o r e", "gore", "g o r e"),
        # A word cut in pieces that are not all common words
        ("a realistic go re scene", "gore", "go re"),
        ("k ill it", "kill", "k ill"),
        ("a k.ill", "kill", "k.ill"),
        ("g o re", "gore", "g o re"),
        ("he roin", "heroin", "he roin"),
        ("white pow er", "white power", "white pow er"),
        # Letters stretched
        ("so baaaad", "bad", "baaaad"),
        ("goooorrrre", "gore", "goooorrrre"),
        ("asssss", "ass", "asssss"),
        # Letters doubled where the term has one, when that spells no common word
        ("lots of gorre", "gore", "gorre"),
        ("oh my godd", "god", "godd"),
        ("nuude", "nude", "nuude"),
        # Leetspeak
        ("g0r3 scene", "gore", "g0r3"),
        ("a b4d idea", "bad", "b4d"),
        ("kick a$$", "ass", "a$$"),
        ("@$$ cheeks", "ass", "@$$"),
        ("a5s cheeks", "ass", "a5s"),
        ("5h1t post", "shit", "5h1t"),
        ("sh!t post", "shit", "sh!t"),
        ("b!a!d idea", "bad", "b!a!d"),
        ("k1ll it", "kill", "k1ll"),
        ("9ore scene", "gore", "9ore"),
        ("k|ll it", "kill", "k|ll"),
        ("kiII it", "kill", "kiII"),  # capital I for l
        ("BIood moon", "blood", "BIood"),
        ("ki11 it", "kill", "ki11"),
        ("b 4 d", "bad", "b 4 d"),
        # Several tricks at once
        ("ｂ.𝐚.\u200dԁ", "bad", "ｂ.𝐚.\u200dԁ"),
        ("𝐠ô\u200br3333", "gore", "𝐠ô\u200br3333"),
        # Multi-word terms, across any separators or run together
        ("a bad word here", "bad word", "bad word"),
        ("a bad -- WORD here", "bad word", "bad -- WORD"),
        ("a bad_word here", "bad word", "bad_word"),
        ("a badword here", "bad word", "badword"),
        ("the b a d word", "bad word", "b a d word"),
        ("the b a d w o r d", "bad word", "b a d w o r d"),
        # A spelled-out word straight after "a" or "I"
        ("draw a b a d idea", "bad", "b a d"),
        ("draw a g.o.r.e scene", "gore", "g.o.r.e"),
        ("I g o r e", "gore", "g o r e"),
        ("draw a b a d word", "bad word", "b a d word"),
        ("say a s s", "ass", "a s s"),
        ("a bad\nword", "bad-word", "bad\nword"),
        ("white-power", "white power", "white-power"),
        ("white.power", "white power", "white.power"),
        ("whitepower", "white power", "whitepower"),
        # Plurals
        ("two bads", "bad", "bads"),
        ("bad words", "bad word", "bad words"),
        ("lots of asses", "ass", "asses"),
        ("some boxes", "box", "boxes"),
        # Punctuation around the word
        ("(gore)", "gore", "gore"),
        ('"gore!"', "gore", "gore"),
        ("gore's look", "gore", "gore"),
    ],
)
def test_blocked_term_is_found_however_it_is_disguised(
    prompt: str, term: str, excerpt: str
) -> None:
    assert find_blocked(prompt, _rules(term)) == BlockMatch(BlockRule(term), excerpt)


@pytest.mark.parametrize(
    ("prompt", "term"),
    [
        # Words that contain a term (the Scunthorpe problem)
        ("a class photo", "ass"),
        ("a robot assistant", "ass"),
        ("a secret passage", "ass"),
        ("an assassin", "ass"),
        ("assess the damage", "ass"),
        ("draw a cat as a dog", "ass"),
        ("a cucumber salad", "cum"),
        ("a scanned document", "cum"),
        ("Scunthorpe United", "cunt"),
        ("a therapist's office", "rapist"),
        ("data analysis", "anal"),
        ("Essex countryside", "sex"),
        ("hello world", "hell"),
        ("he'll be fine", "hell"),
        ("a shell on the beach", "hell"),
        ("a button", "butt"),
        ("a good dog", "god"),
        ("a goood boy", "god"),  # "good" stretched, not "god"
        ("Ich hatte einen Hund", "hate"),  # German "had"
        ("ein alter Pott", "pot"),  # German
        ("a killer whale", "kill"),  # another word
        ("a hero in armor", "heroin"),  # two common words are not glued
        ("a SS officer", "ass"),
        ("a road as S-shaped as a snake", "ass"),  # "S" belongs to "S-shaped"
        ("he'll", "hell"),
        ("the country of Niger", "nigger"),
        ("cocktail party", "cock"),
        ("a hat that he hates", "hats"),
        # Numbers that are not leetspeak
        ("1920s street photo", "izos"),
        ("4k wallpaper", "ak"),
        ("3d render", "ed"),
        ("8k, 35mm film", "mm"),
        ("10x zoom", "iox"),
        ("sunrise at 5am", "sam"),
        ("A1 steak sauce", "ai"),
        ("1080p h264", "hz"),
        ("costs $555", "sss"),
        ("for <@55>", "ass"),
        ("Samsung Galaxy A55", "ass"),  # one letter and a number: a model name
        ("samsung galaxy a55", "ass"),
        # A phrase's words must not be parted by a comma, sentence end or slash
        ("black and white, power lines", "white power"),
        ("a white dress. Power lines", "white power"),
        ("white / power", "white power"),
        # A word wholly in Cyrillic, Greek or Armenian is a word of that language
        ("рот", "pot"),  # Russian "mouth"
        ("открытый рот, акварель", "pot"),
        ("кот и собака", "kot"),
        # Letters that are only spelled out as part of a longer run
        ("c l a s s", "ass"),
        ("a c l a s s", "ass"),
        # Look-alikes fold to letters, not to nothing
        ("Гope", "gore"),
    ],
)
def test_innocent_prompt_is_not_blocked(prompt: str, term: str) -> None:
    assert find_blocked(prompt, _rules(term)) is None


@pytest.mark.parametrize(
    ("term", "stored"),
    [
        ("gore", "gore"),
        ("  GORE ", "gore"),
        ("Gôré", "gore"),
        ("ｇｏｒｅ", "gore"),
        ("gоrе", "gore"),  # Cyrillic
        ("g\u200bore", "gore"),
        ("bad word", "bad word"),
        ("bad-word", "bad word"),
        ("Bad   Word", "bad word"),
        ("b a d", "bad"),
        ("a$$", "ass"),
        ("k1ll", "kill"),
        ("9ore", "gore"),
        ("KILL", "kill"),
        ("A55", "a55"),
        ("рот", "рот"),
        ("4k", "4k"),
        ("1920s", "1920s"),
        ("ab", "ab"),
    ],
)
def test_terms_that_match_alike_are_stored_alike(term: str, stored: str) -> None:
    assert normalize_term(term) == stored
    assert normalize_term(stored) == stored


@pytest.mark.parametrize(
    ("term", "message"),
    [
        ("", "at least 2"),
        ("   ", "at least 2"),
        ("x", "at least 2"),
        ("é", "at least 2"),
        ("!!", "at least 2"),
        ("-_-", "at least 2"),
        ("\u200b\u200bx", "at least 2"),
        ("x" * (MAX_TERM_CHARS + 1), f"at most {MAX_TERM_CHARS}"),
    ],
)
def test_unusable_term_is_refused_with_a_reason(term: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_term(term)


def test_longest_allowed_term_is_accepted() -> None:
    assert normalize_term("ab" * (MAX_TERM_CHARS // 2)) == "ab" * (MAX_TERM_CHARS // 2)


def test_first_rule_in_the_list_wins_over_an_earlier_position() -> None:
    match = find_blocked("bad then gore", _rules("gore", "bad"))
    assert match == BlockMatch(BlockRule("gore"), "gore")


def test_earliest_place_is_shown_for_a_rule_that_matches_twice() -> None:
    match = find_blocked("g0re and gore", _rules("gore"))
    assert match == BlockMatch(BlockRule("gore"), "g0re")


def test_rule_keeps_the_term_as_the_admin_typed_it() -> None:
    match = find_blocked("a gore scene", _rules("GÔRE"))
    assert match is not None and match.rule.term == "GÔRE"


def test_no_rules_blocks_nothing() -> None:
    assert find_blocked("anything at all", []) is None


def test_invalid_stored_term_is_skipped_not_fatal() -> None:
    match = find_blocked("a gore scene", _rules("x", "", "gore"))
    assert match == BlockMatch(BlockRule("gore"), "gore")


def test_empty_prompt_matches_nothing() -> None:
    assert find_blocked("", _rules("gore")) is None


def test_full_size_list_and_prompt_are_checked() -> None:
    # 500 distinct terms (letters only, some multi-word) against a 5,000-character prompt.
    letters = "bcdfghjklmnprstvwz"
    terms = [
        "q" + letters[n % 18] + letters[n // 18 % 18] + letters[n // 324] + ("" if n % 5 else " qq")
        for n in range(500)
    ]
    filler = "a cinematic photo of a castle on a hill at dusk, volumetric light, 4k, 3d, "
    innocent = (filler * (5000 // len(filler) + 1))[:5000]
    assert len(terms) == len(set(terms)) == 500
    assert find_blocked(innocent, _rules(*terms)) is None

    last = terms[-1]
    prompt = innocent[: 5000 - len(last) - 1] + " " + last.upper()
    assert len(prompt) == 5000
    assert find_blocked(prompt, _rules(*terms)) == BlockMatch(BlockRule(last), last.upper())


@pytest.mark.parametrize(
    "prompt",
    [
        "a " * 2500,  # one run of 2,500 single letters
        "1" * 5000,  # one long number
        "a1" * 2500,  # one long word full of ambiguous digits
        "𝐛\u200b" * 2500,  # every character needs folding
        "aaaa" * 1250,  # one letter stretched very far
    ],
)
def test_hostile_prompt_of_full_length_is_checked(prompt: str) -> None:
    assert find_blocked(prompt, _rules("gore", "bad word")) is None


# --- The corpus ---------------------------------------------------------------------------


def _plain_words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.casefold())


def test_corpus_is_as_large_and_varied_as_promised() -> None:
    assert len(TERMS) >= 15 and len(set(TERMS)) == len(TERMS)
    assert sum(" " in term for term in TERMS) >= 2  # multi-word terms
    assert len(EVASIONS) >= 300 and len(set(EVASIONS)) == len(EVASIONS)
    assert {term for term, _ in EVASIONS} == set(TERMS)  # every term is disguised
    assert len(INNOCENT) >= 2000 and len(set(INNOCENT)) == len(INNOCENT)


def test_innocent_prompts_never_use_a_term_as_typed() -> None:
    # Plainly written, a term is refused by design ("a flower pot" when "pot" is blocked): the
    # innocent prompts are near misses, not uses.
    for prompt in INNOCENT:
        words = _plain_words(prompt)
        text = " ".join(words)
        for term in TERMS:
            forms = (term, f"{term}s", f"{term}es")
            if " " in term:  # a phrase: its words with only spaces between them
                assert not re.search(rf"\b{term}(?:e?s)?\b", " ".join(prompt.casefold().split()))
            else:
                assert not any(form in words for form in forms), (prompt, term, text)


def test_blocklist_meets_its_targets_on_the_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    rules = [BlockRule(term) for term in TERMS]
    missed = [
        (term, prompt)
        for term, prompt in EVASIONS
        if find_blocked(prompt, [BlockRule(term)]) is None
    ]
    refused = [
        (prompt, match.rule.term, match.excerpt)
        for prompt in INNOCENT
        if (match := find_blocked(prompt, rules)) is not None
    ]
    caught_rate = 1 - len(missed) / len(EVASIONS)
    refused_rate = len(refused) / len(INNOCENT)
    report = (
        f"blocklist corpus: {caught_rate:.1%} of {len(EVASIONS)} evasions of {len(TERMS)} terms "
        f"caught (target >= {CATCH_TARGET:.0%}), {refused_rate:.2%} of {len(INNOCENT)} innocent "
        f"prompts refused (limit <= {REFUSAL_LIMIT:.1%})"
    )
    with capsys.disabled():  # shown on every run, not only with -s
        print(f"\n{report}")
    details = f"{report}\nmissed: {missed}\nrefused: {refused}"
    assert caught_rate >= CATCH_TARGET, details
    assert refused_rate <= REFUSAL_LIMIT, details


@pytest.mark.parametrize("filler", [0, 3000], ids=["short-prompt", "long-prompt-in-a-thread"])
async def test_a_blocked_term_is_found_in_a_prompt_of_any_length(filler: int) -> None:
    rules = (BlockRule("cat"), BlockRule("gore"))
    prompt = "a quiet harbour, " * (filler // 17) + "lots of g0re"
    assert (len(prompt) > LONG_PROMPT) == bool(filler)
    match = await blocked_in(prompt, rules)
    assert match is not None and match == find_blocked(prompt, rules)
    assert (match.rule.term, match.excerpt) == ("gore", "g0re")
    assert await blocked_in(prompt.replace("g0re", "boats"), rules) is None
    assert await blocked_in(prompt, ()) is None
