"""Moderation records in SQL: `blocked_terms`, `global_terms`, `bans`, `moderation_log` and
`refusal_counts`."""

from __future__ import annotations

from bot.domain import LogEntry, LogKind
from bot.store.sql import SqlDatabase


class SqlModerationRecords:
    """The `ModerationRecords` over SQL: what may not be asked (blocked terms, per server and
    everywhere), who may not ask (a server's member bans), and what was refused or changed.

    `Moderation` keeps the terms and bans (and caches them); `Admission` counts refusals and
    asks which servers ban a member; `ServerAdmin` logs admin changes and reads them back.
    Built by `open_storage`; lives as long as the database.
    """

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    # --- blocked terms ------------------------------------------------------------------------

    async def add_blocked_term(self, guild_id: int, canonical: str, term: str, actor: int) -> bool:
        """False when the server already blocks that term (in any spelling)."""
        return await self._db.changed(
            "INSERT INTO blocked_terms"
            " (guild_id, canonical, term, added_by, added_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (guild_id, canonical, term, actor, self._db.clock()),
        )

    async def remove_blocked_term(self, guild_id: int, canonical: str) -> bool:
        return await self._db.changed(
            "DELETE FROM blocked_terms WHERE guild_id = ? AND canonical = ?",
            (guild_id, canonical),
        )

    async def blocked_terms(self, guild_id: int) -> list[str]:
        rows = await self._db.rows(
            "SELECT term FROM blocked_terms WHERE guild_id = ? ORDER BY added_at, term",
            (guild_id,),
        )
        return [str(row["term"]) for row in rows]

    async def add_global_term(self, canonical: str, term: str) -> bool:
        return await self._db.changed(
            "INSERT INTO global_terms (canonical, term) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (canonical, term),
        )

    async def remove_global_term(self, canonical: str) -> bool:
        return await self._db.changed("DELETE FROM global_terms WHERE canonical = ?", (canonical,))

    async def global_terms(self) -> list[str]:
        rows = await self._db.rows("SELECT term FROM global_terms ORDER BY rowid")
        return [str(row["term"]) for row in rows]

    # --- member bans --------------------------------------------------------------------------

    async def ban(self, guild_id: int, user_id: int, actor: int, reason: str | None) -> bool:
        return await self._db.changed(
            "INSERT INTO bans (guild_id, user_id, banned_by, reason, banned_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (guild_id, user_id, actor, reason, self._db.clock()),
        )

    async def unban(self, guild_id: int, user_id: int) -> bool:
        return await self._db.changed(
            "DELETE FROM bans WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )

    async def banned_members(self, guild_id: int) -> set[int]:
        rows = await self._db.rows("SELECT user_id FROM bans WHERE guild_id = ?", (guild_id,))
        return {int(row["user_id"]) for row in rows}

    async def servers_banning(self, user_id: int) -> list[int]:
        """The servers whose managers banned this member from the bot."""
        rows = await self._db.rows("SELECT guild_id FROM bans WHERE user_id = ?", (user_id,))
        return [int(row["guild_id"]) for row in rows]

    # --- the moderation log -------------------------------------------------------------------

    async def log_moderation(
        self, guild_id: int, user_id: int, kind: LogKind, detail: str, actor: int | None = None
    ) -> None:
        await self._db.execute(
            "INSERT INTO moderation_log (guild_id, user_id, actor_id, kind, detail, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (guild_id, user_id, actor, kind, detail[:1000], self._db.clock()),
        )

    async def moderation_events(self, guild_id: int) -> list[tuple[str, int, str]]:
        """(kind, user_id, detail) of a server's moderation log, oldest first."""
        rows = await self._db.rows(
            "SELECT kind, user_id, detail FROM moderation_log WHERE guild_id = ? ORDER BY id",
            (guild_id,),
        )
        return [(str(row["kind"]), int(row["user_id"]), str(row["detail"])) for row in rows]

    async def admin_changes(self, guild_id: int, limit: int) -> list[LogEntry]:
        """The latest changes admins made in a server (entries with an actor), newest first."""
        rows = await self._db.rows(
            "SELECT kind, user_id, actor_id, detail, at FROM moderation_log"
            " WHERE guild_id = ? AND actor_id IS NOT NULL ORDER BY id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [
            LogEntry(
                LogKind(row["kind"]),
                int(row["user_id"]),
                row["actor_id"],
                str(row["detail"] or ""),
                float(row["at"]),
            )
            for row in rows
        ]

    # --- refusals -----------------------------------------------------------------------------

    async def count_refusal(self, day: str, guild_key: int, reason: str) -> None:
        await self._db.execute(
            "INSERT INTO refusal_counts (day, guild_key, reason, count) VALUES (?, ?, ?, 1)"
            " ON CONFLICT (day, guild_key, reason) DO UPDATE SET count = refusal_counts.count + 1",
            (day, guild_key, reason),
        )

    async def refusals_on(self, day: str) -> dict[int, dict[str, int]]:
        """Refusals of one day: server (0: DMs) -> reason -> how many."""
        rows = await self._db.rows(
            "SELECT guild_key, reason, count FROM refusal_counts WHERE day = ?", (day,)
        )
        counts: dict[int, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(int(row["guild_key"]), {})[str(row["reason"])] = int(row["count"])
        return counts
