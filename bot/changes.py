"""Rules kept in memory, kept in step across the processes that share one database.

Bans, caps, the pause, blocked terms, allowed channels and the servers' own kie.ai keys are
read on every request, so each process keeps them in memory and drops its copy when it changes
them. With several processes on one PostgreSQL database, a change made through one process
must reach the others too: the changer writes a new version under `changes:<topic>` in `meta`,
and every process looks at those versions every `CHANGES_CHECK_SECONDS` and reloads the
topics whose version moved. One small query a second per process, on every backend that is
shared; on SQLite (one process) nothing is written or read.

Polling rather than LISTEN/NOTIFY on purpose: a notification sent while a process's listening
connection was down is lost, a version in a table is not, and a second of delay is well
inside what an operator or a server manager expects of a ban or a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.store import KeyValues

log = logging.getLogger(__name__)

CHANGES_CHECK_SECONDS = 1.0
PREFIX = "changes:"

Reload = Callable[[], Awaitable[None]]


class Topic(enum.StrEnum):
    OPERATOR = "operator"  # bans everywhere, caps, the pause
    MODERATION = "moderation"  # a server's terms, bans, allowed channels; the operator's terms
    SERVER_KEYS = "server-keys"  # which server uses which kie.ai key


async def unshared(topic: Topic) -> None:
    """The announcer of a process that shares its database with nobody."""


Announce = Callable[[Topic], Awaitable[None]]


@dataclass
class SharedChanges:
    """Announces this process's changes and reloads the others'. One per process, built by
    the composition root; `shared` is whether other processes may use the database."""

    meta: KeyValues
    shared: bool
    every: float = CHANGES_CHECK_SECONDS
    _reloads: dict[Topic, list[Reload]] = field(default_factory=dict)
    _seen: dict[str, str] = field(default_factory=dict)
    _watcher: asyncio.Task[None] | None = None

    def on(self, topic: Topic, reload: Reload) -> None:
        """Call `reload` when another process changed `topic`."""
        self._reloads.setdefault(topic, []).append(reload)

    @property
    def announce(self) -> Announce:
        """What a changer calls after writing its change (a no-op when nobody shares it)."""
        return self._announce if self.shared else unshared

    async def _announce(self, topic: Topic) -> None:
        version = uuid.uuid4().hex
        key = PREFIX + topic.value
        await self.meta.set(key, version)
        self._seen[key] = version  # this process changed its own copy already

    async def start(self) -> None:
        """Note the versions as they stand (this process has read nothing yet) and watch."""
        if not self.shared or self._watcher is not None:
            return
        self._seen = await self.meta.with_prefix(PREFIX)
        self._watcher = asyncio.create_task(self._watch(), name="shared-changes")

    async def stop(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def check(self) -> list[Topic]:
        """Reload what other processes changed since the last look; the topics reloaded."""
        versions = await self.meta.with_prefix(PREFIX)
        reloaded: list[Topic] = []
        for key, version in versions.items():
            if self._seen.get(key) == version:
                continue
            self._seen[key] = version
            try:
                topic = Topic(key.removeprefix(PREFIX))
            except ValueError:
                continue  # a newer version of the bot's topic: not ours to reload
            for reload in self._reloads.get(topic, ()):
                await reload()
            reloaded.append(topic)
        return reloaded

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.check()
            except Exception:
                # The database may be restarting: the next look catches up.
                log.warning("could not look for other processes' changes", exc_info=True)
