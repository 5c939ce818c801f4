"""Which kie.ai account pays for a server's jobs: the operator's (KIE_API_KEY) or the server's
own key (`/server kie-key`).

A server's key is checked with kie.ai's credit query before it is kept, sealed at rest
(`bot.keyvault`), held in clear only in memory, and never shown back (only its last four
characters). Each key gets its own `KieClient` (one per key, cached), so its own rate budget
(kie.ai's limits are per account: 20 createTask per 10 s, 10 status queries per second) and its
own circuit breaker, and its own poll scheduler. With REQUIRE_SERVER_KEYS the operator's key
serves OWNER_GUILD_ID only. Built once by the composition root; lives as long as the bot.

A job keeps the account it was sent with (`Job.kie_account`, its `Account.name`: "operator" or
a hash of the key), whatever its server's key becomes: a replaced or removed key is retired,
still sealed, and stays usable by name (`pinned`) until no open job was sent with it
(`sweep`), then is deleted.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.changes import Announce, Topic, unshared
from bot.domain import RetiredKey, SealedKey
from bot.keyvault import KeyVault
from bot.kie import KieClient
from bot.kie.credits import CreditWatch
from bot.kie.errors import KieAuthError, KieError
from bot.kie.polling import PollScheduler
from bot.logsafety import add_secret, forget_secret
from bot.ratebudget import account_fingerprint
from bot.store.interfaces import KeyValues, ServerKeys

log = logging.getLogger(__name__)

CHECK_KEY = "secret_key_check"  # the `meta` row holding `KeyVault.check_value()`
MIN_KEY_LENGTH = 8  # kie.ai keys are 32 hex characters; anything this short is a typo
MAX_KEY_LENGTH = 200
OPERATOR_ACCOUNT = "operator"  # `Job.kie_account` of a job sent with KIE_API_KEY


class SecretKeyLost(Exception):
    """Stored keys cannot be opened with this SECRET_KEY: one sentence for the operator."""


class KeyRefusal(enum.Enum):
    """Why a key was not saved (nothing changed)."""

    NO_SECRET_KEY = "no_secret_key"  # the operator has not set SECRET_KEY
    MALFORMED = "malformed"  # empty, too short or long, or with spaces
    REFUSED = "refused"  # kie.ai said the key is not valid
    UNREACHABLE = "unreachable"  # kie.ai could not be asked now


@dataclass(frozen=True)
class KeySaved:
    last_four: str
    credits: float  # the balance kie.ai gave when the key was checked


@dataclass(frozen=True)
class Account:
    """The client and poll scheduler a job in some server uses; `own`: the server's key."""

    kie: KieClient
    polls: PollScheduler
    own: bool = False
    credits: CreditWatch | None = None  # a server key's balance watch (low-balance alerts)
    name: str = OPERATOR_ACCOUNT  # what a job sent with it records (a hash of its key)


def last_four(key: str) -> str:
    return key[-4:]


class KieAccounts:
    def __init__(
        self,
        operator: Account,
        keys: ServerKeys,
        meta: KeyValues,
        *,
        vault: KeyVault | None,
        new_client: Callable[[str], KieClient],
        new_polls: Callable[[KieClient], PollScheduler],
        new_credits: Callable[[KieClient], CreditWatch] | None = None,
        require_server_keys: bool = False,
        owner_guild_id: int | None = None,
        clock: Callable[[], float] = time.time,
        announce: Announce = unshared,
    ) -> None:
        self.operator = operator
        self._announce = announce  # tells the other processes sharing the database
        self._keys = keys
        self._meta = meta
        self._vault = vault
        self._new_client = new_client
        self._new_polls = new_polls
        self._new_credits = new_credits
        self._require = require_server_keys
        self._owner_guild = owner_guild_id
        self._clock = clock
        self._by_key: dict[str, Account] = {}  # one client per key, whichever servers share it
        self._key_of: dict[int, str] = {}  # guild id -> its key, in clear, in memory only
        # Account name -> key, for every key this process knew (current and retired): a job
        # keeps the account it was sent with, whatever its server's key is now.
        self._by_name: dict[str, str] = {}
        self._loaded = False

    async def load(self) -> None:
        """Open every stored key once at start. Raises `SecretKeyLost` when SECRET_KEY is unset
        or is not the one that sealed them (checked with the stored check value)."""
        if self._loaded:
            return
        stored = await self._keys.server_keys()
        check = await self._meta.get(CHECK_KEY)
        if self._vault is None:
            if stored:
                raise SecretKeyLost(
                    f"SECRET_KEY is not set, but {len(stored)} servers' own kie.ai keys are "
                    "stored sealed with it: set the SECRET_KEY they were sealed with."
                )
            return
        if check is not None and not self._vault.matches(check):
            raise SecretKeyLost(
                "SECRET_KEY is not the one that sealed the servers' own kie.ai keys in the "
                "database: set the SECRET_KEY they were sealed with."
            )
        if check is None:
            await self._meta.set(CHECK_KEY, self._vault.check_value())
        for sealed in stored:
            self._remember(sealed.guild_id, self._vault.open(sealed.sealed))
        await self._open_retired()
        if stored:
            log.info("%d servers use their own kie.ai key", len(stored))
        self._loaded = True

    async def refresh(self) -> None:
        """Read the stored keys again: another process may have set or removed a server's key
        since this one loaded them (`bot/changes.py` calls this within a second of it), and a
        job taken over from it must use that server's key (the takeover calls it first)."""
        if self._vault is None or not self._loaded:
            return
        stored = {k.guild_id: self._vault.open(k.sealed) for k in await self._keys.server_keys()}
        for guild_id, key in stored.items():
            if self._key_of.get(guild_id) != key:
                self._remember(guild_id, key)
        for guild_id in set(self._key_of) - set(stored):
            del self._key_of[guild_id]
        await self._open_retired()

    async def _open_retired(self) -> None:
        """Keys replaced or removed while jobs sent with them were open: those jobs (resumed
        after a restart, or taken over from another process) go on with them."""
        assert self._vault is not None
        for retired in await self._keys.retired_keys():
            if retired.fingerprint not in self._by_name:
                key = self._vault.open(retired.sealed)
                add_secret(key)
                self._by_name[account_fingerprint(key)] = key

    def _remember(self, guild_id: int, key: str) -> None:
        add_secret(key)  # never in a log line, whatever logs it
        self._key_of[guild_id] = key
        self._by_name[account_fingerprint(key)] = key

    def _account(self, key: str) -> Account:
        account = self._by_key.get(key)
        if account is None:
            kie = self._new_client(key)
            watch = self._new_credits(kie) if self._new_credits else None
            name = account_fingerprint(key)
            account = Account(kie, self._new_polls(kie), own=True, credits=watch, name=name)
            self._by_key[key] = account
        return account

    def for_guild(self, guild_id: int | None) -> Account:
        """The account a job in this server uses (the operator's without a key of its own)."""
        key = self._key_of.get(guild_id) if guild_id is not None else None
        return self.operator if key is None else self._account(key)

    def pinned(self, name: str) -> Account | None:
        """The account a job was sent with, by the name it recorded; None when no key of that
        name is known any more (its row was deleted by hand): never another account."""
        if name == OPERATOR_ACCOUNT:
            return self.operator
        key = self._by_name.get(name)
        return None if key is None else self._account(key)

    def has_key(self, guild_id: int | None) -> bool:
        return guild_id is not None and guild_id in self._key_of

    def key_required(self, guild_id: int | None) -> bool:
        """Whether this server needs a key of its own (REQUIRE_SERVER_KEYS, not the owner's)."""
        return self._require and (guild_id is None or guild_id != self._owner_guild)

    def refuses(self, guild_id: int | None) -> bool:
        """REQUIRE_SERVER_KEYS: the operator's key serves its own server only."""
        return self.key_required(guild_id) and not self.has_key(guild_id)

    @property
    def enabled(self) -> bool:
        """Whether servers can set a key at all (SECRET_KEY is set)."""
        return self._vault is not None

    async def save(self, guild_id: int, key: str, actor: int) -> KeySaved | KeyRefusal:
        """Check `key` with kie.ai's credit query, then keep it sealed for this server."""
        key = key.strip()
        if self._vault is None:
            return KeyRefusal.NO_SECRET_KEY
        if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH or any(c.isspace() for c in key):
            return KeyRefusal.MALFORMED
        add_secret(key)  # from before the first call: a failure's log line never shows it
        account = self._account(key)
        try:
            credits = await account.kie.get_credits()
        except KieAuthError:
            self._forget_unused(key)
            return KeyRefusal.REFUSED
        except KieError as error:
            log.info("server %s: kie.ai could not check a key: %s", guild_id, type(error).__name__)
            self._forget_unused(key)
            return KeyRefusal.UNREACHABLE
        sealed = SealedKey(guild_id, self._vault.seal(key), last_four(key), actor, self._clock())
        if not await self._retire(guild_id, replacement=sealed, unless=key):
            await self._keys.put_server_key(sealed)
        self._remember(guild_id, key)
        await self._announce(Topic.SERVER_KEYS)
        await self.sweep()
        return KeySaved(last_four(key), credits)

    async def _retire(
        self, guild_id: int, replacement: SealedKey | None, unless: str | None = None
    ) -> bool:
        """Move the server's stored key (unless it is `unless`) to the retired keys, for the
        jobs sent with it, and put `replacement` in its place, in one transaction. False when
        it had no other key (nothing changed)."""
        stored = await self._keys.server_key(guild_id)
        if stored is None or self._vault is None:
            return False
        old = self._vault.open(stored.sealed)
        if old == unless:
            return False
        name = account_fingerprint(old)
        self._by_name[name] = old
        retired = RetiredKey(name, guild_id, stored.sealed, self._clock())
        return await self._keys.retire_server_key(retired, replacement)

    async def sweep(self) -> int:
        """Delete the retired keys no open job was sent with (at a key's change, at the end
        of each job sent with a server's key, and with the retention pass): how many."""
        if self._vault is None:
            return 0
        swept = await self._keys.sweep_retired_keys()
        current = {account_fingerprint(key) for key in self._key_of.values()}
        for name in swept:
            if name not in current:
                self._by_name.pop(name, None)
        if swept:
            log.info("forgot %d retired kie.ai keys no open job uses", len(swept))
        return len(swept)

    def _forget_unused(self, key: str) -> None:
        # A retired key's client stays: jobs sent with it still poll through it.
        if key not in self._key_of.values() and key not in self._by_name.values():
            self._by_key.pop(key, None)
            forget_secret(key)

    async def shown(self, guild_id: int) -> SealedKey | None:
        """What `show` may tell: the last four characters, who set it and when."""
        return await self._keys.server_key(guild_id)

    async def remove(self, guild_id: int) -> bool:
        # Retired, not deleted: jobs already at kie.ai under it finish with it; the sweep
        # deletes it once none is open (at once when none is).
        removed = await self._retire(guild_id, replacement=None)
        self._key_of.pop(guild_id, None)
        await self._announce(Topic.SERVER_KEYS)
        await self.sweep()
        return removed

    def wake(self, job_id: int) -> bool:
        """A callback for this job arrived: whichever scheduler watches it looks next. False
        when none of this process's does."""
        woken = self.operator.polls.wake(job_id)
        for account in self._by_key.values():
            woken = account.polls.wake(job_id) or woken
        return woken

    async def stop(self) -> None:
        for account in self._by_key.values():
            await account.polls.stop()
