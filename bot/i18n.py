"""Translations: the gettext catalogues (read with Babel), and the language of the text being
written now.

Every text a member reads is written in English in the source, wrapped in `_()` (or `ngettext`
for counts), and looked up in the catalogue of the current locale: a context variable set where
an interaction enters (`bot/ui/locale.py`) and by each job's reply from the locale stored with
the job, so no function has to pass a locale along. Texts in module-level tables are marked
with `N_()` and translated where they are used. Unknown locales, and English, read the source.

Catalogues are `bot/locales/<lang>/LC_MESSAGES/messages.po`, compiled in memory at start-up
(no binary `.mo` is committed); fuzzy entries are left out, as `msgfmt` does.
"""

from __future__ import annotations

import functools
import gettext
import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date
from pathlib import Path

from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"
ENGLISH = "en-US"
# Discord's locale codes (an interaction's `locale`, a server's `preferred_locale`) and the
# catalogue each reads; every other code, English ones included, reads the English source.
CATALOGUES: dict[str, str] = {
    "de": "de",
    "es-ES": "es",
    "es-419": "es",
    "fr": "fr",
    "pt-BR": "pt_BR",
    "ja": "ja",
}

_locale: ContextVar[str] = ContextVar("locale", default=ENGLISH)


def catalogue_name(locale: str | None) -> str | None:
    """The catalogue a Discord locale reads; None for English and every unknown code."""
    return CATALOGUES.get(locale or "")


def catalogue_path(name: str) -> Path:
    return LOCALES_DIR / name / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def translations(name: str | None) -> gettext.NullTranslations:
    """One catalogue, compiled once per process; an absent one reads English."""
    if name is None or not catalogue_path(name).exists():
        return gettext.NullTranslations()
    with catalogue_path(name).open("rb") as source:
        catalog = read_po(source, locale=name, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def load_all() -> list[str]:
    """Compile every shipped catalogue now (at start-up), so a broken one stops the bot
    before a member meets it. Returns the catalogues found."""
    found = sorted({name for name in CATALOGUES.values() if catalogue_path(name).exists()})
    for name in found:
        translations(name)
    return found


def current_locale() -> str:
    return _locale.get()


def set_locale(locale: str | None) -> None:
    """The locale of every text written from here on in this task (and the tasks it starts)."""
    _locale.set(locale or ENGLISH)


@contextmanager
def use_locale(locale: str | None) -> Iterator[None]:
    """Write the texts of a `with` block in `locale` (a job's, a server's)."""
    token = _locale.set(locale or ENGLISH)
    try:
        yield
    finally:
        _locale.reset(token)


def _current() -> gettext.NullTranslations:
    return translations(catalogue_name(_locale.get()))


def _(message: str) -> str:
    """`message` in the current locale."""
    return _current().gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """The form of a text for `count` (each language has its own plural rules)."""
    return _current().ngettext(singular, plural, count)


def N_(message: str) -> str:
    """Marks a text for the catalogue without translating it yet (module-level tables)."""
    return message


def translate(locale: str | None, message: str) -> str | None:
    """`message` in `locale`'s catalogue, or None where it has no translation of its own (for
    Discord's command localizations, which are left out then)."""
    name = catalogue_name(locale)
    if name is None:
        return None
    translated = translations(name).gettext(message)
    return translated if translated != message else None


def catalogue_fingerprint() -> str:
    """Changes whenever a shipped catalogue does, so commands are synced again."""
    digest = hashlib.sha256()
    for name in sorted(set(CATALOGUES.values())):
        path = catalogue_path(name)
        if path.exists():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def decimal(value: float, places: int) -> str:
    """A number with `places` decimals as the current language writes it ("1.5" / "1,5")."""
    name = catalogue_name(_locale.get())
    if name is None:
        return f"{value:.{places}f}"
    pattern = "0." + "0" * places if places else "0"
    return format_decimal(value, format=pattern, locale=name)


def short_date(day: date) -> str:
    """A day where no Discord timestamp can go (an embed's footer): "Thu 03 Dec" in English."""
    name = catalogue_name(_locale.get())
    if name is None:
        return f"{day:%a %d %b}"
    return format_date(day, format="EEE dd MMM", locale=name)
