"""Servers the bot left: their members' personal data goes at once, the server's configuration
after `GRACE_DAYS`, unless the bot is back in the server by then.

A departure is Discord removing the bot from a server (GUILD_DELETE without `unavailable`); an
outage is not one. Servers left while the bot was offline are found when it connects: those the
bot keeps data for that are not among the servers Discord lists at READY (which lists the
unavailable ones too, so an outage never looks like a departure). What goes and what stays is
`bot.store.departures`'s to say; the ledger's totals always stay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from bot.store.interfaces import DepartedServers

log = logging.getLogger(__name__)

# Long enough that a server which kicked the bot by mistake, or while sorting out its bots,
# gets its settings, quotas, blocklist and bans back on re-inviting it within a month.
GRACE_DAYS = 30


class ServerDepartures:
    """Records departures and returns, and removes what the bot kept for servers it left.

    One per process, built by the composition root; the Discord side calls `left`, `returned`
    and `reconcile` from the gateway's events, and the retention pass calls `sweep`.
    """

    def __init__(
        self,
        store: DepartedServers,
        clock: Callable[[], float],
        grace_days: int = GRACE_DAYS,
        forget_server: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        # Drops what the processes keep in memory of a server (its rules, its key) once its
        # configuration is removed: a server that invites the bot back starts afresh.
        self._forget_server = forget_server
        self._clock = clock
        self._grace = grace_days * 86400.0
        # A configuration is removed only once this run has seen the servers Discord lists:
        # the bot may have been re-invited while it was offline.
        self._servers_known = False
        self._reconciling: set[asyncio.Task[object]] = set()

    async def left(self, guild_id: int) -> None:
        """Discord removed the bot from the server."""
        await self._store.record_departure(guild_id, self._clock())
        await self._purge_personal(guild_id, "the bot was removed", always=True)

    async def returned(self, guild_id: int) -> None:
        """The bot is in the server (again): whatever is still kept stays."""
        if await self._store.clear_departure(guild_id):
            log.info("back in server %s: what it had configured is kept", guild_id)

    async def reconcile(
        self, present: Iterable[int], ours: Callable[[int], bool] = lambda _guild_id: True
    ) -> None:
        """At READY: `present` is every server Discord lists, unavailable ones included. Those
        recorded as left are back; those with data and not listed were left while offline (the
        grace period counts from now). `ours`: whether a server is on this process's shards
        (SHARD_IDS): another process's READY lists the others, so their absence says nothing."""
        present = set(present)
        task = asyncio.current_task()
        if task is not None:  # `stop` ends it: a quick restart may close the database under it
            self._reconciling.add(task)
            task.add_done_callback(self._reconciling.discard)
        recorded = {departure.guild_id for departure in await self._store.departures()}
        for guild_id in sorted(recorded & present):
            await self.returned(guild_id)
        for guild_id in sorted(await self._store.servers_with_data() - present - recorded):
            if not ours(guild_id):
                continue
            if await self._store.record_departure(guild_id, self._clock()):
                await self._purge_personal(guild_id, "left while the bot was offline", always=True)
        self._servers_known = True
        await self.sweep()

    async def stop(self) -> None:
        """Cancel a READY's reconcile still running (before the database closes). Whatever it
        did not reach is done by the next start's."""
        running = list(self._reconciling)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def sweep(self) -> None:
        """Blank the jobs of left servers that have finished since, and remove the
        configuration of those left more than the grace period ago."""
        now = self._clock()
        expired = now - self._grace
        for departure in await self._store.departures():
            if departure.purged_at is not None:
                continue
            await self._purge_personal(departure.guild_id, "jobs finished since it was left")
            if self._servers_known and departure.left_at <= expired:
                counts = await self._store.purge_configuration(departure.guild_id, now)
                if counts is not None:
                    if self._forget_server is not None:
                        await self._forget_server(departure.guild_id)
                    log.info(
                        "removed the configuration of server %s, left %d days ago: %s",
                        departure.guild_id,
                        (now - departure.left_at) // 86400,
                        _described(counts),
                    )

    async def _purge_personal(self, guild_id: int, why: str, *, always: bool = False) -> None:
        counts = await self._store.purge_personal(guild_id)
        if always or any(counts.values()):
            log.info(
                "removed members' data of server %s (%s): %s", guild_id, why, _described(counts)
            )


def _described(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {name}" for name, count in counts.items())
