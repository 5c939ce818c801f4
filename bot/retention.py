"""HISTORY_DAYS: finished jobs keep their prompts and links for a while, then are blanked.

Only what a member said and linked to goes (as `/history forget` does); units, day, state and
server stay, so every quota, budget and report reads the same afterwards. The same pass removes
what is left of servers the bot was removed from (`bot.departures`), whatever HISTORY_DAYS says,
and the servers' retired kie.ai keys no open job uses any more (`KieAccounts.sweep`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from bot.departures import ServerDepartures
from bot.store.interfaces import JobLedger

log = logging.getLogger(__name__)

CHECK_EVERY = 6 * 3600.0  # seconds between two passes while the bot runs


class HistoryRetention:
    """Blanks finished jobs older than `days` (0: never). One per process; `keep` runs from
    start-up to shutdown, built by the composition root."""

    def __init__(
        self,
        ledger: JobLedger,
        days: int,
        clock: Callable[[], float],
        departures: ServerDepartures | None = None,
        retired_keys: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self._ledger = ledger
        self._days = days
        self._clock = clock
        self._departures = departures
        # Normally each job's end deletes them; this catches what a crash left behind.
        self._retired_keys = retired_keys

    async def expire(self) -> int:
        """One pass: how many jobs were blanked."""
        if not self._days:
            return 0
        today = datetime.fromtimestamp(self._clock(), UTC).date()
        before = (today - timedelta(days=self._days)).isoformat()
        blanked = await self._ledger.expire_history(before)
        if blanked:
            log.info("blanked the prompts and links of %d jobs from before %s", blanked, before)
        return blanked

    async def sweep(self) -> None:
        """One whole pass: old history, then what is left of servers the bot left. A failed
        part is logged and retried at the next pass."""
        try:
            await self.expire()
        except Exception:
            log.warning("could not blank old history", exc_info=True)
        if self._departures is not None:
            try:
                await self._departures.sweep()
            except Exception:
                log.warning("could not remove the data of servers the bot left", exc_info=True)
        if self._retired_keys is not None:
            try:
                await self._retired_keys()
            except Exception:
                log.warning("could not delete retired kie.ai keys", exc_info=True)

    async def keep(self, every: float = CHECK_EVERY) -> None:
        """A pass now and every `every` seconds, until cancelled."""
        while True:
            await self.sweep()
            await asyncio.sleep(every)
