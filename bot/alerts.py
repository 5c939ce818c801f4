"""Alerts for the operator: problems with the kie.ai account that only they can fix.

Each kind is sent at most once an hour (a failing account fails every job at once, and the
operator needs one message, not a hundred), and the time of the last one is kept in the database
so a crash loop does not repeat it. Several bot processes on one database send each alert once:
before sending, a process moves the stored time from what it read to now (a compare-and-set),
and only the one that wins sends. Whether an alert really went out is returned, because members
are told "the operator has been alerted" only when that is true.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable

from bot.store import KeyValues

log = logging.getLogger(__name__)

ALERT_EVERY = 3600.0
RETRY_FAILED_AFTER = 60.0  # a route that failed (no channel, DMs closed) is tried again after


class AlertKind(enum.StrEnum):
    KEY_REFUSED = "key_refused"  # 401: KIE_API_KEY is wrong or revoked
    OUT_OF_CREDITS = "out_of_credits"  # 402 / 433
    FEATURE_DISABLED = "feature_disabled"  # 505
    LOW_BALANCE = "low_balance"  # below LOW_CREDITS_WARNING
    TOTAL_CAP = "total_cap"  # TOTAL_DAILY_CAP reached


# A low balance says nothing new right after the account was reported empty.
_COVERED_BY = {AlertKind.LOW_BALANCE: AlertKind.OUT_OF_CREDITS}
# The total cap is reached once a day at most: one alert for that day, not one an hour.
_ONCE_A_DAY = frozenset({AlertKind.TOTAL_CAP})

Send = Callable[[str], Awaitable[bool]]  # True when the text reached the operator somewhere


class OperatorAlerts:
    def __init__(
        self,
        meta: KeyValues,
        send: Send | None = None,
        *,
        every: float = ALERT_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._meta = meta
        self._send = send
        self._every = every
        self._clock = clock
        self._lock = asyncio.Lock()
        self._sent: dict[AlertKind, float] = {}
        self._failed: dict[AlertKind, float] = {}
        self._loaded = False

    def route_to(self, send: Send) -> None:
        """Where alerts go (the bot, once it exists: a channel or the owner's DMs)."""
        self._send = send

    async def alert(self, kind: AlertKind, text: str) -> bool:
        """Send `text` unless this kind went out within the hour. True when the operator has
        been alerted about it (now or within the hour)."""
        async with self._lock:  # concurrent failures of one kind make one alert
            await self._load()
            now = self._clock()
            covering = _COVERED_BY.get(kind)
            for recent in (kind, covering):
                if recent is not None and self._fresh(recent, now):
                    return True
            if now - self._failed.get(kind, -RETRY_FAILED_AFTER) < RETRY_FAILED_AFTER:
                return False
            if self._send is None:
                log.error("could not alert the operator about %s", kind.value)
                return False
            # Another process on the same database may have sent one since we last looked.
            stored = {recent: await self._stored(recent) for recent in (kind, covering) if recent}
            if any(self._fresh(recent, now) for recent in stored):
                return True
            key, previous = f"alert:{kind.value}", stored[kind]
            if not await self._meta.compare_and_set(key, previous, repr(now)):
                # Another process claimed this alert a moment ago and is sending it.
                await self._stored(kind)
                return True
            if not await self._send(text):
                # Unclaim it, so this process (or another) tries again a minute later.
                if previous is None:
                    await self._meta.delete(key)
                else:
                    await self._meta.compare_and_set(key, repr(now), previous)
                self._failed[kind] = now
                log.error("could not alert the operator about %s", kind.value)
                return False
            self._sent[kind] = now
            log.warning("alerted the operator: %s", kind.value)
            return True

    async def _stored(self, kind: AlertKind) -> str | None:
        """The stored time of the last alert of this kind, remembered; its text as stored."""
        value = await self._meta.get(f"alert:{kind.value}")
        if value is not None:
            with contextlib.suppress(ValueError):  # a mangled row: as if none was sent
                self._sent[kind] = max(self._sent.get(kind, 0.0), float(value))
        return value

    def _fresh(self, kind: AlertKind, now: float) -> bool:
        """Whether an alert of this kind went out recently enough to stand."""
        sent = self._sent.get(kind)
        if sent is None:
            return False
        if kind in _ONCE_A_DAY:
            return int(sent // 86400) == int(now // 86400)  # the same UTC day
        return now - sent < self._every

    async def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for kind in AlertKind:
            value = await self._meta.get(f"alert:{kind.value}")
            if value is not None:
                try:
                    self._sent[kind] = float(value)
                except ValueError:
                    continue
