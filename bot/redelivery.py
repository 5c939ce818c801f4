"""Delivering a finished image again while Discord is down, instead of refunding it.

The Discord side raises `DiscordUnavailable` when Discord could not take the message for now
(a 5xx, a 429 left after discord.py's own retries, or no answer at all: a reset connection, a
timeout). The image is made and paid for, so the job keeps it and tries again with a doubling
delay, for up to `patience` seconds; each attempt picks its route afresh (the reply while its
token lives, then the channel, then a DM), so an expired token or a closed channel still ends
in the usual fallbacks. Only when Discord stays down past `patience` does the job fail and its
units go back. An attempt that failed delivered nothing the next one could duplicate: editing
the reply again replaces it, and channel posts carry the job's nonce.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class DiscordUnavailable(Exception):
    """Discord could not take the message for now; the same message may be sent again."""


@dataclass(frozen=True)
class RedeliveryPolicy:
    first_delay: float = 2.0
    max_delay: float = 60.0
    # As long as an interaction token lives: a longer outage ends in a refund.
    patience: float = 15 * 60.0


async def patiently(
    send: Callable[[], Awaitable[T]],
    *,
    policy: RedeliveryPolicy,
    what: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`send()`, again after each `DiscordUnavailable` until `policy.patience` has passed;
    then the last `DiscordUnavailable` is raised."""
    give_up = clock() + policy.patience
    delay = policy.first_delay
    attempts = 1
    while True:
        try:
            return await send()
        except DiscordUnavailable as error:
            if clock() + delay > give_up:
                log.warning("%s: Discord still unavailable after %d attempts", what, attempts)
                raise
            log.warning("%s: Discord unavailable (%s); trying again in %.1fs", what, error, delay)
        await sleep(delay)
        delay = min(delay * 2, policy.max_delay)
        attempts += 1
