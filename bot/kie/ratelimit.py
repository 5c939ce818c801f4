"""Client-side rate limiting: keep every caller inside a provider's documented limits.

kie.ai rejects (rather than queues) calls over its limits, so the bot queues them itself.
Waiters are grouped by a key (a member, for submissions) and served round-robin across keys,
first come first served within a key: one member firing twenty commands cannot push everyone
else to the back of the line.

With several processes on one kie.ai key (PostgreSQL), the limiter is also given the key's
`SharedBudget` (`bot.ratebudget`): each slot it grants is then taken from the window every
process shares too. The local line still decides which of this process's waiters goes next,
and the local window still answers without a round trip whenever this process alone is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Grant:
    at: float  # when the call counts from; infinity while it is still on the wire
    unused: bool = False  # set by a holder that decided not to make the call after all
    shared: int | None = None  # its slot in the shared window, when there is one
    waited_shared: bool = False  # other processes' calls made it wait


@dataclass(frozen=True)
class SharedSlot:
    id: int
    waited: bool  # the shared window was full when first asked


class SharedBudget(Protocol):
    """The same limit for one kie.ai key, shared with other processes (`bot.ratebudget`)."""

    async def take(self) -> SharedSlot:
        """Wait until the shared window has room, then take a slot in it (counted as on the
        wire until `finish`)."""
        ...

    async def finish(self, slot: int) -> None:
        """The call has ended: its slot counts for one window from now."""
        ...

    async def give_back(self, slot: int) -> None:
        """The call was not made: its slot is free again."""
        ...

    async def push_back(self, seconds: float) -> None:
        """No slot for any process for `seconds` (kie.ai said we were too fast)."""
        ...

    def free_now(self) -> int:
        """Roughly how many slots the shared window has free now (as last seen)."""
        ...


@dataclass(frozen=True)
class Turn:
    """Where a new caller would stand in line, and roughly when its turn comes."""

    position: int  # 1 = next
    wait_seconds: float


class SlidingWindowLimiter:
    """At most `max_calls` grants in any `period` seconds, fair across keys.

    `margin` widens the window a little, because the server measures arrival times and the
    network can bunch requests up.
    """

    def __init__(
        self,
        max_calls: int,
        period: float,
        *,
        margin: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_calls < 1 or period <= 0:
            raise ValueError("a limiter needs at least one call per positive period")
        self._max_calls = max_calls
        self._window = period + margin
        self._clock = clock
        self._sleep = sleep
        self._granted: list[Grant] = []
        # Each key's waiters, and how many turns the key has had while waiting. The next turn
        # goes to the key with the fewest, then to the one served longest ago.
        self._lines: dict[Hashable, deque[asyncio.Future[Grant]]] = {}
        self._turns: dict[Hashable, int] = {}
        self._last_served: dict[Hashable, int] = {}
        self._grants = 0
        self._dispatcher: asyncio.Task[None] | None = None
        self._slot_freed = asyncio.Event()
        self._shared: SharedBudget | None = None
        # Told how long a caller waited for its turn, when it had to (the bot's metrics).
        self.on_wait: Callable[[float], None] | None = None

    def fresh(self) -> SlidingWindowLimiter:
        """A limiter with the same limit and no calls yet (another account's budget)."""
        return SlidingWindowLimiter(
            self._max_calls, self._window, clock=self._clock, sleep=self._sleep
        )

    def share(self, budget: SharedBudget) -> None:
        """Take every slot from `budget` too: other processes spend the same limit."""
        self._shared = budget

    @property
    def shared(self) -> bool:
        return self._shared is not None

    @property
    def period(self) -> float:
        return self._window

    @property
    def max_calls(self) -> int:
        return self._max_calls

    def free_now(self) -> int:
        """Slots that could be granted this instant, if nobody were waiting."""
        self._expire(self._clock())
        free = self._max_calls - len(self._granted)
        if self._shared is not None:
            # Our own calls are in the shared window too: it is never more free than we are.
            free = min(free, self._shared.free_now())
        return max(0, free - self.waiting)

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def turn(self, key: Hashable = None) -> Turn:
        """Where a caller with `key` would stand if it asked now."""
        own = len(self._lines.get(key, ()))
        round_of_new = self._turns.get(key, self._current_round()) + own
        ahead = own + sum(
            max(0, min(len(line), round_of_new + 1 - self._turns[k]))
            for k, line in self._lines.items()
            if k != key
        )
        position = ahead + 1
        self._expire(self._clock())
        free_now = self._max_calls - len(self._granted)
        # Callers ahead that a free slot is about to serve (a burst of charges committed
        # together starts its jobs at once) are going now, not waiting: the place shown is
        # among those waiting for a slot.
        beyond = max(0, position - free_now)
        return Turn(max(1, beyond), beyond * self._window / self._max_calls)

    @contextlib.asynccontextmanager
    async def use(self, key: Hashable = None) -> AsyncIterator[Grant]:
        """Hold a slot for one call, counted from when the call has finished.

        The server counts a call when it arrives, which is some time after we were granted the
        slot (the event loop may be busy, the request slow). Counting from the end of the call
        keeps the next window's calls from arriving too early, however late this one went out.
        """
        # Only a caller that found others waiting or no free slot waited; one served at once is
        # not counted. (O(1) in the waiters: `waiting` would sum every member's line.)
        must_wait = self.on_wait is not None and (bool(self._lines) or self._full())
        asked = self._clock()
        grant = await self._acquire(key)
        if (must_wait or grant.waited_shared) and self.on_wait is not None:
            self.on_wait(self._clock() - asked)
        grant.at = math.inf
        try:
            yield grant
        finally:
            if grant.unused:
                self._granted.remove(grant)
            else:
                grant.at = self._clock()
            self._slot_freed.set()
            await self._settle_shared(grant)

    async def _settle_shared(self, grant: Grant) -> None:
        """Tell the shared window the call ended (or was not made)."""
        if self._shared is None or grant.shared is None:
            return
        if grant.unused:
            await self._shared.give_back(grant.shared)
        else:
            await self._shared.finish(grant.shared)

    async def _acquire(self, key: Hashable) -> Grant:
        granted: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        if key not in self._lines:
            # A key joining the line starts in the current round, not ahead of everyone.
            self._turns[key] = self._current_round()
            self._last_served[key] = -1
            self._lines[key] = deque()
        self._lines[key].append(granted)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="rate-limiter")
        return await granted

    def _current_round(self) -> int:
        return min(self._turns.values(), default=0)

    async def _dispatch(self) -> None:
        while self._lines:
            grant = await self._take_slot()
            key = min(self._lines, key=lambda k: (self._turns[k], self._last_served[k]))
            line = self._lines[key]
            waiter = line.popleft()
            self._turns[key] += 1
            self._grants += 1
            self._last_served[key] = self._grants
            if not line:
                del self._lines[key], self._turns[key], self._last_served[key]
            if waiter.done():  # cancelled while waiting: give the slot back
                self._granted.remove(grant)
                grant.unused = True
                await self._settle_shared(grant)
                continue
            waiter.set_result(grant)

    def _full(self) -> bool:
        self._expire(self._clock())
        return len(self._granted) >= self._max_calls

    def _expire(self, now: float) -> None:
        self._granted = [g for g in self._granted if now - g.at < self._window]

    async def _take_slot(self) -> Grant:
        while True:
            now = self._clock()
            self._expire(now)
            if len(self._granted) < self._max_calls:
                # Our window has room; the shared one may make us wait for other processes'
                # calls (meanwhile nothing here can fill ours: only this task grants).
                if self._shared is None:
                    grant = Grant(self._clock())
                else:
                    slot = await self._shared.take()
                    grant = Grant(self._clock(), shared=slot.id, waited_shared=slot.waited)
                self._granted.append(grant)
                return grant
            oldest = min(g.at for g in self._granted)
            if oldest == math.inf:
                # Every slot is on the wire: the first to finish will wake us.
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            await self._sleep(self._window - (now - oldest))

    def record_past(self, ages: list[float]) -> None:
        """Count calls made `ages` seconds ago (e.g. by the previous run of the bot)."""
        now = self._clock()
        past = [Grant(now - age) for age in ages if 0 <= age < self._window]
        newest = sorted([*past, *self._granted], key=lambda g: g.at)
        self._granted = newest[-self._max_calls :]

    async def push_back(self, seconds: float) -> None:
        """`delay`, for every process sharing the limit too."""
        self.delay(seconds)
        if self._shared is not None:
            await self._shared.push_back(seconds)

    def delay(self, seconds: float) -> None:
        """Push the window forward after the server said we were too fast (e.g. a 429)."""
        # Fill the window so nothing is granted until `seconds` have passed.
        stamp = self._clock() + seconds - self._window
        self._granted = [Grant(stamp) for _ in range(self._max_calls)]


class SharedBudgets(Protocol):
    """Makes the shared budget of each kie.ai key and kind of call (`bot.ratebudget`)."""

    def budget(self, api_key: str, kind: str, limiter: SlidingWindowLimiter) -> SharedBudget: ...
