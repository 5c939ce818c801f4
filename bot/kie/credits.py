"""The kie.ai balance: read on demand, watched after jobs, and when to warn that it runs low.

The balance is read at most once per `check_every` seconds on its own (it shares the status-query
budget), and at once when a job failed for lack of credits. A warning goes out when the balance
is below the threshold, then again only after `warn_every` seconds or if it halved since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.kie import KieClient, KieError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Balance:
    credits: float
    threshold: float  # 0: warnings are off

    @property
    def low(self) -> bool:
        return self.threshold > 0 and self.credits < self.threshold


class CreditWatch:
    """Whether the kie.ai balance runs low, checked after jobs without spending the poll budget.

    One per process, for the bot's lifetime. `JobService` calls `after_job` when a job ends (at
    once after a 402); `/server credits` and the start-up key check call `balance`. It keeps
    only when it last looked and last warned; a failed read is logged and skipped.
    """

    def __init__(
        self,
        kie: KieClient,
        *,
        threshold: float,
        check_every: float = 600.0,
        warn_every: float = 24 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kie = kie
        self._threshold = threshold
        self._check_every = check_every
        self._warn_every = warn_every
        self._clock = clock
        self._last_check = float("-inf")
        self._last_warning: tuple[float, float] | None = None  # (when, balance then)

    async def balance(self) -> Balance:
        """Read the balance now (raises `KieError`)."""
        self._last_check = self._clock()
        return Balance(await self._kie.get_credits(), self._threshold)

    async def after_job(self, *, out_of_credits: bool = False) -> Balance | None:
        """Look at the balance if it is due (or a job ran out of credits).

        Returns the balance when the owner should be warned about it now, else None.
        """
        if self._threshold <= 0:
            return None
        if not out_of_credits and self._clock() - self._last_check < self._check_every:
            return None
        try:
            balance = await self.balance()
        except KieError as error:
            log.warning("could not read the kie.ai balance: %s", error)
            return None
        return balance if self.warning_due(balance) else None

    def warning_due(self, balance: Balance) -> bool:
        """True (once per `warn_every`, or when it halved since) for a low balance."""
        if not balance.low:
            return False
        if self._last_warning is not None:
            when, then = self._last_warning
            if self._clock() - when < self._warn_every and balance.credits > then / 2:
                return False
        self._last_warning = (self._clock(), balance.credits)
        log.warning(
            "the kie.ai balance is low: %.0f credits (warning below %.0f)",
            balance.credits,
            balance.threshold,
        )
        return True
