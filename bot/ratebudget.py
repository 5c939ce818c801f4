"""kie.ai's rate limits shared by every bot process on one PostgreSQL database.

kie.ai's limits are per key (20 createTask per 10 s, 10 status queries per second), whatever
the number of processes using it: three processes each holding the whole limit in memory would
send three times too much. So on PostgreSQL each process's `SlidingWindowLimiter` also takes
every slot from a window kept in the database (`RateWindows`, the `kie_rate_slots` table):

- The local limiter stays: it orders this process's waiters (round-robin by member) and stops
  them without a round trip while this process alone fills the window. Only the slot it grants
  next asks the database, in one short transaction.
- Times are the database's clock: the machines' clocks may differ.
- A slot counts until a window after its call *ended*, as the local limiter does: a call that
  hangs cannot let the next window's calls reach kie.ai early. A process killed mid-call never
  ends its slot: it counts until `hold` after it was taken (the longest a call can last, plus a
  window), then no more; nothing is held forever.
- A process refused sleeps until the soonest time a slot can free (a call on the wire frees a
  window after it ends, so not before a window from now), then asks again: no busy polling.
  Processes are served in the order they were first refused (the database remembers it), so
  none starves; within a process, its own limiter's order (members take turns) holds.
- A 429 pushes the window back for every process (a hold as large as the limit).
- The account is a hash of its key, never the key.

SQLite has one process: its limiters keep the whole truth in memory and never ask the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from bot.kie.ratelimit import SharedSlot, SlidingWindowLimiter
from bot.store.interfaces import RateWindows

log = logging.getLogger(__name__)

# Seconds to wait before asking again when the database did not answer: no slot is granted
# without it (an unshared slot could break kie.ai's limit), and jobs wait meanwhile.
RETRY_AFTER_ERROR = 1.0
# Added to a computed wait: the slot frees by the database's clock, and our sleep may end a
# hair early.
WAKE_SLACK = 0.002
# Seconds between looks while the window has room but a process refused earlier is still to
# take it (it is due any moment: it was told the same time, or sooner).
AHEAD_RECHECK = 0.02
# Added to a call's longest time on the wire for a slot whose process died: the time between
# the grant and the send (a job's "submitting" write), which a busy process makes longer.
SEND_SLACK = 5.0


def account_fingerprint(api_key: str) -> str:
    """Who an account is in the shared table: a hash of its key (the key never leaves
    memory). The same in every process."""
    return hashlib.sha256(f"imagine-bot kie.ai account\0{api_key}".encode()).hexdigest()[:32]


class SharedWindow:
    """One key's budget of one kind of call, shared through the database (a `SharedBudget`
    for that key's `SlidingWindowLimiter`)."""

    def __init__(
        self,
        store: RateWindows,
        account: str,
        kind: str,
        max_calls: int,
        window: float,
        *,
        hold: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._account = account
        self._kind = kind
        self._max_calls = max_calls
        self._window = window
        self._hold = hold
        self._clock = clock
        self._sleep = sleep
        # The calls counted at the last look (ours too), as (when it may leave, slots), and
        # our slots taken since, by id: the poll scheduler's view of what is free between looks.
        self._seen: list[tuple[float, int]] = []
        self._mine: dict[int, float] = {}
        self._waiter = uuid.uuid4().hex  # this process's place in the line for the window

    async def take(self) -> SharedSlot:
        waited = False
        while True:
            try:
                answer = await self._store.take(
                    self._account,
                    self._kind,
                    self._waiter,
                    self._max_calls,
                    self._window,
                    self._hold,
                )
            except Exception as error:  # the database is down or busy: ask again later
                log.warning(
                    "shared kie.ai %s budget unavailable (%s); retrying",
                    self._kind,
                    type(error).__name__,
                )
                waited = True
                await self._sleep(RETRY_AFTER_ERROR)
                continue
            now = self._clock()
            self._seen = [(now + seconds, slots) for seconds, slots in answer.counted]
            self._mine.clear()  # counted in `_seen` now
            if answer.slot is not None:
                self._mine[answer.slot] = now + self._window
                return SharedSlot(answer.slot, waited)
            waited = True
            if sum(slots for _, slots in answer.counted) < self._max_calls:
                await self._sleep(AHEAD_RECHECK)  # room, but others were refused first
            else:
                await self._sleep(self._until_free(answer.counted) + WAKE_SLACK)

    def _until_free(self, counted: tuple[tuple[float, int], ...]) -> float:
        """Seconds until enough counted calls have left for one more."""
        excess = sum(slots for _, slots in counted) - self._max_calls + 1
        for seconds, slots in counted:
            excess -= slots
            if excess <= 0:
                return max(0.0, seconds)
        return 0.0  # the window had room after all (a slot was given back meanwhile)

    async def finish(self, slot: int) -> None:
        if slot in self._mine:
            self._mine[slot] = self._clock() + self._window
        try:
            await self._store.finish(slot, self._window)
        except Exception as error:  # it counts until its hold ends: later, never sooner
            log.info("could not end a shared kie.ai slot (%s)", type(error).__name__)

    async def give_back(self, slot: int) -> None:
        self._mine.pop(slot, None)
        try:
            await self._store.give_back(slot)
        except Exception as error:  # it counts until its hold ends: a little waste at most
            # (Also at shutdown: a waiter cancelled after the database closed.)
            log.info("could not give back a shared kie.ai slot (%s)", type(error).__name__)

    async def push_back(self, seconds: float) -> None:
        try:
            await self._store.push_back(self._account, self._kind, self._max_calls, seconds)
        except Exception as error:  # this process still waits (its local limiter)
            log.warning("could not share a kie.ai back-off (%s)", type(error).__name__)

    def free_now(self) -> int:
        now = self._clock()
        counted = sum(slots for at, slots in self._seen if at > now)
        counted += sum(1 for at in self._mine.values() if at > now)
        return max(0, self._max_calls - counted)


class SharedWindows:
    """Makes each kie.ai key's shared budgets (`KieClient.share_limits`). `request_timeout`:
    the longest a call lasts, which bounds how long a dead process's slot counts."""

    def __init__(self, store: RateWindows, *, request_timeout: float) -> None:
        self._store = store
        self._request_timeout = request_timeout

    def budget(self, api_key: str, kind: str, limiter: SlidingWindowLimiter) -> SharedWindow:
        window = limiter.period
        return SharedWindow(
            self._store,
            account_fingerprint(api_key),
            kind,
            limiter.max_calls,
            window,
            hold=self._request_timeout + SEND_SLACK + window,
        )
