"""Quota policy: what an image costs, which UTC day it counts against, and when that day ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.kie import Resolution
from bot.store import Store


@dataclass(frozen=True)
class QuotaStatus:
    used: int
    limit: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True)
class Costs:
    units_1k: int = 1
    units_2k: int = 2

    def units(self, resolution: Resolution) -> int:
        return self.units_2k if resolution == "2K" else self.units_1k


class QuotaBook:
    """Reads quota status from the store; charging itself is `JobService`'s `Store.reserve`."""

    def __init__(
        self,
        store: Store,
        *,
        daily_limit: int,
        costs: Costs,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.daily_limit = daily_limit
        self.costs = costs
        self._clock = clock

    def today(self) -> str:
        return self.now().date().isoformat()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def next_reset(self) -> datetime:
        now = self.now()
        return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)

    async def status(self, user_id: int) -> QuotaStatus:
        used = await self._store.units_used(user_id, self.today())
        return QuotaStatus(used=used, limit=self.daily_limit, resets_at=self.next_reset())
