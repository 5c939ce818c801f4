"""The operator's controls over a public deployment: what no server setting can lift.

The operator (the application's owner or team) runs one kie.ai account for many servers they do
not know. From `/owner` they cap a server's daily units, ban a user or a server everywhere, block
terms on top of every server's blocklist, and pause all generation. Every action is kept in
`owner_log` with who did it and when. The pause lives in the database too, so a restart does not
quietly resume generating.

Bans and caps are read on every request, so they are kept in memory too, loaded once and
changed together with the database. Every change goes through this class; one made by another
process sharing the database reaches this one through `bot/changes.py` (`reload`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.changes import Announce, Topic, unshared
from bot.domain import OwnerAction
from bot.readthrough import ReadThrough
from bot.store import BanList, KeyValues, OperatorRecords

log = logging.getLogger(__name__)

DM_KEY = 0  # the "server" key of direct messages in caps and counts
_PAUSE_KEY = "operator:paused"  # meta: the reason while paused; absent while running


def guild_key(guild_id: int | None) -> int:
    return DM_KEY if guild_id is None else guild_id


@dataclass(frozen=True)
class Ceilings:
    """The operator's limits from the environment; None: no cap."""

    member_daily: int = 50  # MAX_MEMBER_DAILY
    server_daily: int | None = 500  # SERVER_DAILY_CAP
    total_daily: int | None = None  # TOTAL_DAILY_CAP


class PauseGate:
    """Open while generation runs. Closed by `/owner pause`: jobs wait here before createTask,
    keeping their charge, and go on when it opens again."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self.reason: str | None = None

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def close(self, reason: str) -> None:
        self.reason = reason
        self._open.clear()

    def open(self) -> None:
        self.reason = None
        self._open.set()

    async def wait_open(self) -> None:
        await self._open.wait()


class OperatorControls:
    """The operator's bans, caps, blocked terms and pause, kept in the database and in memory.

    One per process, for the bot's lifetime. `/owner` changes them; `Admission` and `QuotaBook`
    read them on every request (from memory); `JobService` waits at its `PauseGate`.
    """

    def __init__(
        self,
        records: OperatorRecords,
        meta: KeyValues,
        ceilings: Ceilings,
        gate: PauseGate,
        announce: Announce = unshared,
    ) -> None:
        self._records = records
        self._meta = meta
        self.ceilings = ceilings
        self.gate = gate
        self._announce = announce  # tells the other processes sharing the database
        self._banned = ReadThrough(records.banned_everywhere)  # list -> keys, once read
        self._caps = ReadThrough(self._read_caps)  # (key None) server -> its own daily cap

    async def _bans(self, table: BanList) -> set[int]:
        return await self._banned.get(table)

    async def _read_caps(self, _: None) -> dict[int, int]:
        return await self._records.server_caps()

    async def load(self) -> None:
        """Restore the pause after a restart. Call once at start-up."""
        reason = await self._meta.get(_PAUSE_KEY)
        if reason is not None:
            self.gate.close(reason)
            log.warning("generation is paused by the operator (since before this start)")

    async def reload(self) -> None:
        """Another process changed a ban, a cap or the pause: read them again."""
        self._banned.drop()
        self._caps.drop()
        reason = await self._meta.get(_PAUSE_KEY)
        if reason is not None and (not self.gate.paused or self.gate.reason != reason):
            self.gate.close(reason)
            log.warning("generation was paused by the operator through another process")
        elif reason is None and self.gate.paused:
            self.gate.open()
            log.warning("generation was resumed by the operator through another process")

    # --- caps ---------------------------------------------------------------------------------

    async def server_cap(self, guild_id: int | None) -> int | None:
        """Units the server (or all DMs) may spend a day: the owner's own cap for it, else
        SERVER_DAILY_CAP; None: no cap."""
        own = (await self._caps.get(None)).get(guild_key(guild_id))
        if own is not None:
            return own or None
        return self.ceilings.server_daily

    async def set_cap(self, actor: int, key: int, units: int | None) -> None:
        """`units` None: back to SERVER_DAILY_CAP; 0: no cap for this server."""
        await self._records.set_server_cap(key, units)
        self._caps.drop()  # read again on the next request
        await self._announce(Topic.OPERATOR)
        shown = "default" if units is None else ("no cap" if units == 0 else str(units))
        await self._log(actor, "cap", "DMs" if key == DM_KEY else str(key), shown)

    # --- bans ---------------------------------------------------------------------------------

    async def user_banned(self, user_id: int) -> bool:
        return user_id in await self._bans(BanList.USERS)

    async def server_banned(self, guild_id: int) -> bool:
        return guild_id in await self._bans(BanList.SERVERS)

    async def ban_user(self, actor: int, user_id: int, reason: str | None) -> bool:
        return await self._ban(actor, BanList.USERS, "ban-user", user_id, reason)

    async def unban_user(self, actor: int, user_id: int) -> bool:
        return await self._unban(actor, BanList.USERS, "unban-user", user_id)

    async def ban_server(self, actor: int, guild_id: int, reason: str | None) -> bool:
        return await self._ban(actor, BanList.SERVERS, "ban-server", guild_id, reason)

    async def unban_server(self, actor: int, guild_id: int) -> bool:
        return await self._unban(actor, BanList.SERVERS, "unban-server", guild_id)

    async def _ban(
        self, actor: int, table: BanList, action: str, key: int, reason: str | None
    ) -> bool:
        banned = await self._records.ban_everywhere(table, key, reason)
        self._banned.drop(table)
        await self._announce(Topic.OPERATOR)
        if banned:
            await self._log(actor, action, str(key), reason or "")
        return banned

    async def _unban(self, actor: int, table: BanList, action: str, key: int) -> bool:
        unbanned = await self._records.unban_everywhere(table, key)
        self._banned.drop(table)
        await self._announce(Topic.OPERATOR)
        if unbanned:
            await self._log(actor, action, str(key), "")
        return unbanned

    # --- pause --------------------------------------------------------------------------------

    async def pause(self, actor: int, reason: str) -> bool:
        """False if it was already paused (the reason is updated all the same)."""
        was_paused = self.gate.paused
        await self._meta.set(_PAUSE_KEY, reason)
        self.gate.close(reason)
        await self._announce(Topic.OPERATOR)
        await self._log(actor, "pause", "", reason)
        return not was_paused

    async def resume(self, actor: int) -> bool:
        if not self.gate.paused:
            return False
        await self._meta.delete(_PAUSE_KEY)
        self.gate.open()
        await self._announce(Topic.OPERATOR)
        await self._log(actor, "resume", "", "")
        return True

    # --- the record ---------------------------------------------------------------------------

    async def log_term(self, actor: int, action: str, term: str) -> None:
        await self._log(actor, action, "", term)

    async def actions(self, limit: int = 10) -> list[OwnerAction]:
        return await self._records.owner_actions(limit)

    async def _log(self, actor: int, action: str, target: str, detail: str) -> None:
        """Record an owner action, and log it once: what and on whom, never the free text
        (a reason, a term)."""
        await self._records.log_owner_action(actor, action, target, detail)
        # Pausing and resuming change what every member gets: worth a warning.
        level = logging.WARNING if action in ("pause", "resume") else logging.INFO
        log.log(
            level,
            "owner action by %s: %s%s",
            actor,
            action,
            f" {target}" if target else "",
            extra={"actor_id": actor, "change": action},
        )
