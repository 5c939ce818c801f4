"""Sealing the servers' own kie.ai keys at rest, with a key derived from SECRET_KEY.

Fernet (AES-128-CBC with HMAC-SHA256, from the `cryptography` library) over a key that HKDF
derives from the operator's SECRET_KEY: a copy of the database alone reveals no key. A small
check value sealed the same way tells at start whether SECRET_KEY is still the one that sealed
the stored keys, so a lost or changed SECRET_KEY is one start-up sentence, not a failed job.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Fixed, public inputs of the derivation: they only keep this key apart from any other use of
# SECRET_KEY.
_SALT = b"imagine-bot/server-kie-keys/v1"
_INFO = b"fernet key for servers' kie.ai keys"
CHECK_PLAINTEXT = "imagine-bot secret key check"


class WrongSecret(Exception):
    """A sealed value was not sealed with this SECRET_KEY (or was altered)."""


class KeyVault:
    """Seals and opens short secrets; never shows them in its `repr`."""

    def __init__(self, secret_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(
            secret_key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def __repr__(self) -> str:
        return "KeyVault()"

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise WrongSecret from None

    def check_value(self) -> str:
        """What to store once, so a later start can tell whether SECRET_KEY changed."""
        return self.seal(CHECK_PLAINTEXT)

    def matches(self, check_value: str) -> bool:
        try:
            return self.open(check_value) == CHECK_PLAINTEXT
        except WrongSecret:
            return False
