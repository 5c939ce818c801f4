"""All SQL: the schema, its numbered migrations, and the job ledger that quotas are read from.

Every generation is a row in `jobs` from the moment its units are reserved. A user's usage for a
day is the sum of units of their jobs that were not refunded, so charging is the insert itself
(one atomic statement) and refunding is a state change: the ledger cannot drift from the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite

from bot.domain import (
    CHARGED_STATES,
    OPEN_STATES,
    DayTotals,
    Job,
    JobState,
    LogEntry,
    MemberTotals,
    NewJob,
    Origin,
    OverLimit,
    OwnerAction,
    ReplyTarget,
    ServerPolicy,
    ServerSpend,
    SpendLimits,
    Usage,
)

# Migration N takes the schema from user_version N-1 to N. Append only; never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id       INTEGER NOT NULL,
        guild_id      INTEGER,
        channel_id    INTEGER,
        day           TEXT    NOT NULL,
        units         INTEGER NOT NULL CHECK (units > 0),
        prompt        TEXT    NOT NULL,
        aspect_ratio  TEXT    NOT NULL,
        resolution    TEXT    NOT NULL,
        state         TEXT    NOT NULL,
        task_id       TEXT,
        error         TEXT,
        created_at    REAL    NOT NULL,
        updated_at    REAL    NOT NULL
    );
    CREATE INDEX jobs_user_day ON jobs (user_id, day);
    CREATE INDEX jobs_state ON jobs (state);
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: what a job needs to find its requester again after a restart.
    """
    ALTER TABLE jobs ADD COLUMN application_id   INTEGER;
    ALTER TABLE jobs ADD COLUMN interaction_token TEXT;
    ALTER TABLE jobs ADD COLUMN interaction_at   REAL;
    ALTER TABLE jobs ADD COLUMN attachment_limit INTEGER;
    ALTER TABLE jobs ADD COLUMN nonce            TEXT;
    ALTER TABLE jobs ADD COLUMN callback_token   TEXT;
    ALTER TABLE jobs ADD COLUMN submitted_at     REAL;
    ALTER TABLE jobs ADD COLUMN delivered_via    TEXT;
    """,
    # 3: moderation. Every admin change and every refused prompt is kept in moderation_log.
    """
    CREATE TABLE guild_settings (
        guild_id         INTEGER PRIMARY KEY,
        audit_channel_id INTEGER
    );
    CREATE TABLE blocked_terms (
        guild_id   INTEGER NOT NULL,
        canonical  TEXT    NOT NULL,
        term       TEXT    NOT NULL,
        added_by   INTEGER NOT NULL,
        added_at   REAL    NOT NULL,
        PRIMARY KEY (guild_id, canonical)
    );
    CREATE TABLE bans (
        guild_id   INTEGER NOT NULL,
        user_id    INTEGER NOT NULL,
        banned_by  INTEGER NOT NULL,
        reason     TEXT,
        banned_at  REAL    NOT NULL,
        PRIMARY KEY (guild_id, user_id)
    );
    CREATE TABLE moderation_log (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id  INTEGER NOT NULL,
        user_id   INTEGER NOT NULL,
        actor_id  INTEGER,
        kind      TEXT    NOT NULL,
        detail    TEXT,
        at        REAL    NOT NULL
    );
    CREATE INDEX moderation_log_guild ON moderation_log (guild_id, at);
    """,
    # 4: a link to the message that shows each delivered image, for /history.
    """
    ALTER TABLE jobs ADD COLUMN result_url TEXT;
    """,
    # 5: channels where /imagine may be used (none listed: everywhere).
    """
    CREATE TABLE allowed_channels (
        guild_id   INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        PRIMARY KEY (guild_id, channel_id)
    );
    """,
    # 6: reference images and result buttons; per-server quota policy and running limits.
    # Quotas are counted per member per server from here on (guild_id IS NULL: direct messages).
    """
    ALTER TABLE jobs ADD COLUMN reference_url  TEXT;
    ALTER TABLE jobs ADD COLUMN input_url      TEXT;
    ALTER TABLE jobs ADD COLUMN origin         TEXT NOT NULL DEFAULT 'command';
    ALTER TABLE jobs ADD COLUMN parent_job_id  INTEGER;
    ALTER TABLE jobs ADD COLUMN quota_limit    INTEGER;
    ALTER TABLE jobs ADD COLUMN deleted_at     REAL;
    CREATE INDEX jobs_guild_day ON jobs (guild_id, day);
    ALTER TABLE guild_settings ADD COLUMN daily_quota            INTEGER;
    ALTER TABLE guild_settings ADD COLUMN daily_budget           INTEGER;
    ALTER TABLE guild_settings ADD COLUMN max_running_per_member INTEGER;
    ALTER TABLE guild_settings ADD COLUMN max_running            INTEGER;
    CREATE TABLE role_quotas (
        guild_id    INTEGER NOT NULL,
        role_id     INTEGER NOT NULL,
        daily_quota INTEGER NOT NULL,
        PRIMARY KEY (guild_id, role_id)
    );
    CREATE TABLE quota_adjustments (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id  INTEGER,
        user_id   INTEGER NOT NULL,
        day       TEXT    NOT NULL,
        kind      TEXT    NOT NULL,
        units     INTEGER NOT NULL DEFAULT 0,
        actor_id  INTEGER,
        at        REAL    NOT NULL
    );
    CREATE INDEX quota_adjustments_member ON quota_adjustments (user_id, guild_id, day);
    """,
    # 7: the operator's controls for a public bot. Caps, bans and terms that no server setting
    # can lift; content safety per job; what kie.ai charged; refusals counted per reason.
    # guild_key is the server id, or 0 for direct messages (a key may not be NULL).
    """
    ALTER TABLE jobs ADD COLUMN nsfw_checker INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN spoiler      INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN credits      REAL;
    CREATE INDEX jobs_day ON jobs (day);
    CREATE INDEX bans_user ON bans (user_id);
    ALTER TABLE guild_settings ADD COLUMN nsfw_allowed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE guild_settings ADD COLUMN nsfw_spoiler INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE server_caps (
        guild_key  INTEGER PRIMARY KEY,
        daily_cap  INTEGER NOT NULL
    );
    CREATE TABLE banned_users (
        user_id    INTEGER PRIMARY KEY,
        reason     TEXT
    );
    CREATE TABLE banned_servers (
        guild_id   INTEGER PRIMARY KEY,
        reason     TEXT
    );
    CREATE TABLE global_terms (
        canonical  TEXT PRIMARY KEY,
        term       TEXT NOT NULL
    );
    CREATE TABLE owner_log (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        actor_id   INTEGER NOT NULL,
        action     TEXT    NOT NULL,
        target     TEXT,
        detail     TEXT,
        at         REAL    NOT NULL
    );
    CREATE TABLE refusal_counts (
        day        TEXT    NOT NULL,
        guild_key  INTEGER NOT NULL,
        reason     TEXT    NOT NULL,
        count      INTEGER NOT NULL,
        PRIMARY KEY (day, guild_key, reason)
    );
    """,
    # 8: every charge sums a server's and the whole day's units: covering indexes answer those
    # sums from the index alone (they replace the narrower ones).
    """
    CREATE INDEX jobs_guild_day_spend ON jobs (guild_id, day, state, units);
    CREATE INDEX jobs_day_spend ON jobs (day, state, units);
    DROP INDEX jobs_guild_day;
    DROP INDEX jobs_day;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


# Settings an admin may change with one value each; the names are also the column names.
POLICY_COLUMNS = ("daily_quota", "daily_budget", "max_running_per_member", "max_running")
NSFW_COLUMNS = ("nsfw_allowed", "nsfw_spoiler")

_JOB_COLUMNS = (
    "id, user_id, guild_id, channel_id, day, units, prompt, aspect_ratio, resolution, "
    "state, task_id, error, created_at, application_id, interaction_token, interaction_at, "
    "attachment_limit, nonce, callback_token, delivered_via, submitted_at, result_url, "
    "reference_url, input_url, origin, parent_job_id, quota_limit, deleted_at, "
    "nsfw_checker, spoiler, credits"
)
# The owner's bans: table -> its key column (constants, so they are safe to write into SQL).
_BAN_TABLES = {"banned_users": "user_id", "banned_servers": "guild_id"}
# The states whose units count: constants, so they are safe to write into SQL.
_CHARGED_SQL = "state IN (" + ", ".join(f"'{s.value}'" for s in CHARGED_STATES) + ")"

# The sums a charge is checked against, as scalar subqueries over named parameters (:user,
# :guild, :day). A reset by an admin makes the member's jobs charged before it stop counting.
_MEMBER_USED_SQL = f"""(SELECT COALESCE(SUM(units), 0) FROM jobs
    WHERE user_id = :user AND guild_id IS :guild AND day = :day AND {_CHARGED_SQL}
      AND created_at > COALESCE(
        (SELECT MAX(at) FROM quota_adjustments
          WHERE user_id = :user AND guild_id IS :guild AND day = :day AND kind = 'reset'), 0))"""
_MEMBER_GRANTED_SQL = """(SELECT COALESCE(SUM(units), 0) FROM quota_adjustments
    WHERE user_id = :user AND guild_id IS :guild AND day = :day AND kind = 'grant')"""
_SERVER_SPENT_SQL = f"""(SELECT COALESCE(SUM(units), 0) FROM jobs
    WHERE guild_id IS :guild AND day = :day AND {_CHARGED_SQL})"""
_DAY_SPENT_SQL = f"(SELECT COALESCE(SUM(units), 0) FROM jobs WHERE day = :day AND {_CHARGED_SQL})"


def _job(row: aiosqlite.Row | tuple[Any, ...]) -> Job:
    (job_id, user_id, guild_id, channel_id, day, units, prompt, aspect_ratio, resolution) = row[:9]
    (state, task_id, error, created_at) = row[9:13]
    (app_id, token, interaction_at, limit, nonce, callback, via, sent, url) = row[13:22]
    (reference, input_url, origin, parent, quota_limit, deleted) = row[22:28]
    (nsfw_checker, spoiler, credits) = row[28:31]
    reply = None
    if app_id is not None and token:
        reply = ReplyTarget(app_id, token, interaction_at, limit)
    return Job(
        id=job_id,
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        day=day,
        units=units,
        prompt=prompt,
        aspect_ratio=aspect_ratio,
        resolution=resolution,
        state=JobState(state),
        task_id=task_id,
        error=error,
        created_at=created_at,
        reply=reply,
        nonce=nonce or "",
        callback_token=callback or "",
        delivered_via=via,
        submitted_at=sent,
        result_url=url,
        reference_url=reference,
        input_url=input_url,
        origin=Origin(origin or Origin.COMMAND),
        parent_job_id=parent,
        quota_limit=quota_limit,
        deleted_at=deleted,
        nsfw_checker=bool(nsfw_checker),
        spoiler=bool(spoiler),
        credits=credits,
    )


def _private_files(path: Path) -> None:
    """The database holds live interaction tokens, callback secrets and every prompt: its folder
    is created 0700 and its files are 0600 (SQLite gives its -wal and -shm files the database
    file's mode, so creating that one first is enough; older files are tightened)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(file, 0o600)


class Store:
    """The bot's SQLite database. Open with `Store.open()`, close with `close()`."""

    def __init__(self, db: aiosqlite.Connection, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock
        # One connection is shared by all coroutines; a transaction spanning several awaits
        # must not interleave with another coroutine's statements.
        self._write = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> Store:
        if str(path) != ":memory:":
            await asyncio.to_thread(_private_files, path)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA busy_timeout=5000")
            # FULL: a state change is on disk before the side effect it announces happens.
            await db.execute("PRAGMA synchronous=FULL")
            store = cls(db, clock)
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def writable(self) -> bool:
        """Whether a write transaction can be opened and committed now (for readiness)."""
        try:
            async with self._transaction():
                pass
        except sqlite3.Error:
            return False
        return True

    async def schema_version(self) -> int:
        rows = await self._rows("PRAGMA user_version")
        return int(rows[0][0]) if rows else 0

    async def _changed(self, sql: str, params: tuple[object, ...]) -> bool:
        """Run one write; True when it changed exactly one row."""
        async with self._write:
            cursor = await self._db.execute(sql, params)
        return cursor.rowcount == 1

    async def _rows(
        self, sql: str, params: tuple[object, ...] | dict[str, object] = ()
    ) -> list[tuple[Any, ...]]:
        # Execute and fetch in one call on aiosqlite's thread, so no other coroutine's
        # statement can run in between and disturb the cursor.
        return [tuple(row) for row in await self._db.execute_fetchall(sql, params)]

    async def _migrate(self) -> None:
        current = await self.schema_version()
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database is at schema version {current}, newer than this bot "
                f"({SCHEMA_VERSION}); upgrade the bot"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            async with self._transaction():
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version = {version}")

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        # IMMEDIATE takes the write lock up front (waiting up to busy_timeout for another
        # process), so the reads inside the transaction see what the write will be based on.
        async with self._write:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    # --- quota ledger -------------------------------------------------------------------------

    async def over_limit(
        self, user_id: int, guild_id: int | None, day: str, units: int, limits: SpendLimits
    ) -> OverLimit | None:
        """Which limit charging `units` now would exceed, or None (a read; `reserve` decides).

        One statement: every sum the limits need, and only those.
        """
        server_limits = (
            (limits.server_budget if guild_id is not None else None, OverLimit.BUDGET),
            (limits.server_cap, OverLimit.SERVER_CAP),
        )
        need_server = any(limit is not None for limit, _ in server_limits)
        rows = await self._rows(
            f"""SELECT {_MEMBER_USED_SQL}, {_MEMBER_GRANTED_SQL},
                       CASE WHEN :server THEN {_SERVER_SPENT_SQL} ELSE 0 END,
                       CASE WHEN :total THEN {_DAY_SPENT_SQL} ELSE 0 END""",
            {
                "user": user_id,
                "guild": guild_id,
                "day": day,
                "server": need_server,
                "total": limits.total_cap is not None,
            },
        )
        used, granted, server_spent, total_spent = (int(value) for value in rows[0])
        if used + units > limits.member_limit(granted):
            return OverLimit.QUOTA
        for limit, refusal in server_limits:
            if limit is not None and server_spent + units > limit:
                return refusal
        if limits.total_cap is not None and total_spent + units > limits.total_cap:
            return OverLimit.TOTAL_CAP
        return None

    async def reserve(self, job: NewJob, limits: SpendLimits) -> Job | OverLimit:
        """See `_reserve`. Shielded: a cancelled command (say, at shutdown) must not leave the
        connection inside an open transaction."""
        return await asyncio.shield(self._reserve(job, limits))

    async def _reserve(self, job: NewJob, limits: SpendLimits) -> Job | OverLimit:
        """Charge `job.units` and record the job, if it stays within every limit of the day:
        the member's (plus grants, under the operator's ceiling), the server's budget and cap,
        and the operator's total.

        The checks and the insert run in one IMMEDIATE transaction under the write lock, so no
        other command can charge in between: any number of simultaneous commands cannot
        overspend any of them.
        """
        now = self._clock()
        reply = job.reply
        async with self._transaction():
            refusal = await self.over_limit(job.user_id, job.guild_id, job.day, job.units, limits)
            if refusal is not None:
                return refusal
            cursor = await self._db.execute(
                """
                INSERT INTO jobs (user_id, guild_id, channel_id, day, units, prompt,
                                  aspect_ratio, resolution, state, created_at, updated_at,
                                  application_id, interaction_token, interaction_at,
                                  attachment_limit, nonce, callback_token, reference_url,
                                  input_url, origin, parent_job_id, quota_limit,
                                  nsfw_checker, spoiler)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    job.user_id,
                    job.guild_id,
                    job.channel_id,
                    job.day,
                    job.units,
                    job.prompt,
                    job.aspect_ratio,
                    job.resolution,
                    JobState.RESERVED.value,
                    now,
                    now,
                    reply.application_id if reply else None,
                    reply.token if reply else None,
                    reply.created_at if reply else None,
                    reply.attachment_limit if reply else None,
                    secrets.token_hex(10),  # Discord nonces are at most 25 characters
                    secrets.token_urlsafe(24),
                    job.reference_url,
                    job.input_url,
                    job.origin.value,
                    job.parent_job_id,
                    limits.member,
                    job.nsfw_checker,
                    job.spoiler,
                ),
            )
        job_id = cursor.lastrowid
        assert job_id is not None
        found = await self.get_job(job_id)
        assert found is not None
        return found

    async def usage(self, user_id: int, guild_id: int | None, day: str) -> Usage:
        """A member's charged units in one server (None: direct messages) on one day."""
        rows = await self._rows(
            f"SELECT {_MEMBER_USED_SQL}, {_MEMBER_GRANTED_SQL}",
            {"user": user_id, "guild": guild_id, "day": day},
        )
        return Usage(used=int(rows[0][0]), granted=int(rows[0][1]))

    async def server_units(self, guild_id: int | None, day: str) -> int:
        """Units charged in one server (None: all direct messages) on one day, over all members
        (the server budget and cap)."""
        rows = await self._rows(f"SELECT {_SERVER_SPENT_SQL}", {"guild": guild_id, "day": day})
        return int(rows[0][0])

    async def total_units(self, day: str) -> int:
        """Units charged on one day over every server and DM (the operator's total cap)."""
        rows = await self._rows(f"SELECT {_DAY_SPENT_SQL}", {"day": day})
        return int(rows[0][0])

    async def add_quota_adjustment(
        self, guild_id: int, user_id: int, day: str, kind: str, units: int, actor: int
    ) -> None:
        """Record an admin's grant of extra units (kind "grant") or a reset ("reset")."""
        async with self._write:
            await self._db.execute(
                "INSERT INTO quota_adjustments (guild_id, user_id, day, kind, units, actor_id, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (guild_id, user_id, day, kind, units, actor, self._clock()),
            )

    async def total_units_charged(self) -> int:
        """Units charged and not refunded, over all users and days."""
        rows = await self._rows(
            f"""SELECT COALESCE(SUM(units), 0) FROM jobs
                WHERE state IN ({", ".join("?" * len(CHARGED_STATES))})""",
            CHARGED_STATES,
        )
        return int(rows[0][0])

    async def count_by_state(self) -> dict[JobState, int]:
        rows = await self._rows("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {JobState(state): count for state, count in rows}

    # --- job states ---------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        rows = await self._rows(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def open_jobs(self) -> list[Job]:
        rows = await self._rows(
            f"""SELECT {_JOB_COLUMNS} FROM jobs
                WHERE state IN ({", ".join("?" * len(OPEN_STATES))}) ORDER BY id""",
            OPEN_STATES,
        )
        return [_job(row) for row in rows]

    async def begin_submit(self, job_id: int) -> bool:
        """Committed before createTask is sent: a crash after this must not resend it."""
        return await self._transition(
            job_id, (JobState.RESERVED,), JobState.SUBMITTING, submitted_at=self._clock()
        )

    async def submissions_since(self, since: float) -> list[float]:
        """When createTask calls went out after `since` (Unix time), oldest first."""
        rows = await self._rows(
            "SELECT submitted_at FROM jobs WHERE submitted_at >= ? ORDER BY submitted_at",
            (since,),
        )
        return [float(row[0]) for row in rows]

    async def mark_submitted(self, job_id: int, task_id: str) -> bool:
        return await self._transition(
            job_id, (JobState.SUBMITTING,), JobState.SUBMITTED, task_id=task_id
        )

    async def begin_delivery(self, job_id: int) -> bool:
        return await self._transition(
            job_id, (JobState.SUBMITTED, JobState.DELIVERING), JobState.DELIVERING
        )

    async def mark_delivered(self, job_id: int, via: str, url: str | None = None) -> bool:
        return await self._transition(
            job_id, (JobState.DELIVERING,), JobState.DELIVERED, delivered_via=via, result_url=url
        )

    async def recent_jobs(self, user_id: int, guild_id: int | None, limit: int) -> list[Job]:
        """A member's latest finished generations in one server (or in DMs), newest first."""
        rows = await self._rows(
            f"""SELECT {_JOB_COLUMNS} FROM jobs
                WHERE user_id = ? AND guild_id IS ? AND state IN (?, ?)
                ORDER BY id DESC LIMIT ?""",
            (user_id, guild_id, JobState.DELIVERED, JobState.REFUNDED, limit),
        )
        return [_job(row) for row in rows]

    async def refund(self, job_id: int, reason: str) -> bool:
        """Give the units back. True only for the call that actually refunded."""
        return await self._transition(job_id, OPEN_STATES, JobState.REFUNDED, error=reason)

    async def _transition(
        self,
        job_id: int,
        from_states: tuple[JobState, ...],
        to_state: JobState,
        *,
        task_id: str | None = None,
        error: str | None = None,
        delivered_via: str | None = None,
        submitted_at: float | None = None,
        result_url: str | None = None,
    ) -> bool:
        # The WHERE on the current state makes each transition happen at most once. A finished
        # job forgets its interaction token: it is a credential, kept only while needed.
        finished = to_state in (JobState.DELIVERED, JobState.REFUNDED)
        return await self._changed(
            f"""UPDATE jobs SET state = ?, task_id = COALESCE(?, task_id),
                   error = COALESCE(?, error), delivered_via = COALESCE(?, delivered_via),
                   submitted_at = COALESCE(?, submitted_at),
                   result_url = COALESCE(?, result_url),
                   interaction_token = CASE WHEN ? THEN NULL ELSE interaction_token END,
                   updated_at = ?
                WHERE id = ? AND state IN ({", ".join("?" * len(from_states))})""",
            (
                to_state.value,
                task_id,
                error,
                delivered_via,
                submitted_at,
                result_url,
                finished,
                self._clock(),
                job_id,
                *from_states,
            ),
        )

    # --- moderation ---------------------------------------------------------------------------

    async def add_blocked_term(self, guild_id: int, canonical: str, term: str, actor: int) -> bool:
        """False when the server already blocks that term (in any spelling)."""
        return await self._changed(
            "INSERT OR IGNORE INTO blocked_terms"
            " (guild_id, canonical, term, added_by, added_at) VALUES (?, ?, ?, ?, ?)",
            (guild_id, canonical, term, actor, self._clock()),
        )

    async def remove_blocked_term(self, guild_id: int, canonical: str) -> bool:
        return await self._changed(
            "DELETE FROM blocked_terms WHERE guild_id = ? AND canonical = ?",
            (guild_id, canonical),
        )

    async def blocked_terms(self, guild_id: int) -> list[str]:
        rows = await self._rows(
            "SELECT term FROM blocked_terms WHERE guild_id = ? ORDER BY added_at, term",
            (guild_id,),
        )
        return [str(row[0]) for row in rows]

    async def ban(self, guild_id: int, user_id: int, actor: int, reason: str | None) -> bool:
        return await self._changed(
            "INSERT OR IGNORE INTO bans (guild_id, user_id, banned_by, reason, banned_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (guild_id, user_id, actor, reason, self._clock()),
        )

    async def unban(self, guild_id: int, user_id: int) -> bool:
        return await self._changed(
            "DELETE FROM bans WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )

    async def banned_members(self, guild_id: int) -> set[int]:
        rows = await self._rows("SELECT user_id FROM bans WHERE guild_id = ?", (guild_id,))
        return {int(row[0]) for row in rows}

    async def set_audit_channel(self, guild_id: int, channel_id: int | None) -> None:
        async with self._write:
            await self._db.execute(
                "INSERT INTO guild_settings (guild_id, audit_channel_id) VALUES (?, ?)"
                " ON CONFLICT (guild_id)"
                " DO UPDATE SET audit_channel_id = excluded.audit_channel_id",
                (guild_id, channel_id),
            )

    async def audit_channel(self, guild_id: int) -> int | None:
        rows = await self._rows(
            "SELECT audit_channel_id FROM guild_settings WHERE guild_id = ?", (guild_id,)
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def allow_channel(self, guild_id: int, channel_id: int) -> bool:
        return await self._changed(
            "INSERT OR IGNORE INTO allowed_channels (guild_id, channel_id) VALUES (?, ?)",
            (guild_id, channel_id),
        )

    async def disallow_channel(self, guild_id: int, channel_id: int) -> bool:
        return await self._changed(
            "DELETE FROM allowed_channels WHERE guild_id = ? AND channel_id = ?",
            (guild_id, channel_id),
        )

    async def allowed_channels(self, guild_id: int) -> list[int]:
        rows = await self._rows(
            "SELECT channel_id FROM allowed_channels WHERE guild_id = ? ORDER BY channel_id",
            (guild_id,),
        )
        return [int(row[0]) for row in rows]

    async def log_moderation(
        self, guild_id: int, user_id: int, kind: str, detail: str, actor: int | None = None
    ) -> None:
        async with self._write:
            await self._db.execute(
                "INSERT INTO moderation_log (guild_id, user_id, actor_id, kind, detail, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (guild_id, user_id, actor, kind, detail[:1000], self._clock()),
            )

    async def moderation_events(self, guild_id: int) -> list[tuple[str, int, str]]:
        """(kind, user_id, detail) of a server's moderation log, oldest first."""
        rows = await self._rows(
            "SELECT kind, user_id, detail FROM moderation_log WHERE guild_id = ? ORDER BY id",
            (guild_id,),
        )
        return [(str(k), int(u), str(d)) for k, u, d in rows]

    # --- per-server policy --------------------------------------------------------------------

    async def server_policy(self, guild_id: int) -> ServerPolicy:
        columns = (*POLICY_COLUMNS, *NSFW_COLUMNS)
        rows = await self._rows(
            f"SELECT {', '.join(columns)} FROM guild_settings WHERE guild_id = ?",
            (guild_id,),
        )
        roles = await self._rows(
            "SELECT role_id, daily_quota FROM role_quotas WHERE guild_id = ?", (guild_id,)
        )
        values: dict[str, Any] = dict(zip(columns, rows[0], strict=True)) if rows else {}
        for name in NSFW_COLUMNS:
            values[name] = bool(values.get(name))
        return ServerPolicy(**values, role_quotas={int(role): int(units) for role, units in roles})

    async def set_nsfw(self, guild_id: int, name: str, value: bool) -> None:
        if name not in NSFW_COLUMNS:
            raise ValueError(f"unknown server setting {name!r}")
        async with self._write:
            await self._db.execute(
                f"INSERT INTO guild_settings (guild_id, {name}) VALUES (?, ?)"
                f" ON CONFLICT (guild_id) DO UPDATE SET {name} = excluded.{name}",
                (guild_id, int(value)),
            )

    async def set_policy_value(self, guild_id: int, name: str, value: int | None) -> None:
        if name not in POLICY_COLUMNS:
            raise ValueError(f"unknown server setting {name!r}")
        async with self._write:
            await self._db.execute(
                f"INSERT INTO guild_settings (guild_id, {name}) VALUES (?, ?)"
                f" ON CONFLICT (guild_id) DO UPDATE SET {name} = excluded.{name}",
                (guild_id, value),
            )

    async def set_role_quota(self, guild_id: int, role_id: int, units: int | None) -> bool:
        """Set (or, with None, remove) a role's daily quota; False when nothing changed."""
        if units is None:
            return await self._changed(
                "DELETE FROM role_quotas WHERE guild_id = ? AND role_id = ?", (guild_id, role_id)
            )
        return await self._changed(
            "INSERT INTO role_quotas (guild_id, role_id, daily_quota) VALUES (?, ?, ?)"
            " ON CONFLICT (guild_id, role_id) DO UPDATE SET daily_quota = excluded.daily_quota",
            (guild_id, role_id, units),
        )

    # --- results and statistics ---------------------------------------------------------------

    async def set_input_url(self, job_id: int, url: str) -> None:
        """The reference image's copy on kie.ai's file host, kept so a restart need not redo it."""
        await self._changed("UPDATE jobs SET input_url = ? WHERE id = ?", (url, job_id))

    async def mark_result_deleted(self, job_id: int) -> bool:
        return await self._changed(
            "UPDATE jobs SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
            (self._clock(), job_id),
        )

    async def daily_totals(self, guild_id: int, since_day: str) -> list[DayTotals]:
        """Per UTC day from `since_day` on: images delivered, jobs failed, units charged."""
        rows = await self._rows(
            f"""SELECT day, SUM(state = 'delivered'), SUM(state = 'refunded'),
                       SUM(CASE WHEN {_CHARGED_SQL} THEN units ELSE 0 END)
                FROM jobs WHERE guild_id = ? AND day >= ? GROUP BY day ORDER BY day""",
            (guild_id, since_day),
        )
        return [DayTotals(str(d), int(ok), int(failed), int(u)) for d, ok, failed, u in rows]

    async def top_members(self, guild_id: int, since_day: str, limit: int) -> list[MemberTotals]:
        rows = await self._rows(
            f"""SELECT user_id, SUM(state = 'delivered'),
                       SUM(CASE WHEN {_CHARGED_SQL} THEN units ELSE 0 END) AS spent
                FROM jobs WHERE guild_id = ? AND day >= ?
                GROUP BY user_id HAVING spent > 0 ORDER BY spent DESC, user_id LIMIT ?""",
            (guild_id, since_day, limit),
        )
        return [MemberTotals(int(user), int(ok), int(units)) for user, ok, units in rows]

    async def admin_changes(self, guild_id: int, limit: int) -> list[LogEntry]:
        """The latest changes admins made in a server (entries with an actor), newest first."""
        rows = await self._rows(
            "SELECT kind, user_id, actor_id, detail, at FROM moderation_log"
            " WHERE guild_id = ? AND actor_id IS NOT NULL ORDER BY id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [LogEntry(str(k), int(u), a, str(d or ""), float(t)) for k, u, a, d, t in rows]

    # --- the operator's controls --------------------------------------------------------------

    async def server_caps(self) -> dict[int, int]:
        rows = await self._rows("SELECT guild_key, daily_cap FROM server_caps")
        return {int(key): int(cap) for key, cap in rows}

    async def set_server_cap(self, guild_key: int, cap: int | None) -> None:
        async with self._write:
            if cap is None:
                await self._db.execute("DELETE FROM server_caps WHERE guild_key = ?", (guild_key,))
            else:
                await self._db.execute(
                    "INSERT INTO server_caps (guild_key, daily_cap) VALUES (?, ?)"
                    " ON CONFLICT (guild_key) DO UPDATE SET daily_cap = excluded.daily_cap",
                    (guild_key, cap),
                )

    async def ban_everywhere(self, table: str, key: int, reason: str | None) -> bool:
        """Ban a user (`banned_users`) or a server (`banned_servers`); False if it already was."""
        column = _BAN_TABLES[table]
        return await self._changed(
            f"INSERT OR IGNORE INTO {table} ({column}, reason) VALUES (?, ?)", (key, reason)
        )

    async def unban_everywhere(self, table: str, key: int) -> bool:
        column = _BAN_TABLES[table]
        return await self._changed(f"DELETE FROM {table} WHERE {column} = ?", (key,))

    async def banned_everywhere(self, table: str) -> set[int]:
        """Every user (`banned_users`) or server (`banned_servers`) the owner banned."""
        column = _BAN_TABLES[table]
        return {int(row[0]) for row in await self._rows(f"SELECT {column} FROM {table}")}

    async def servers_banning(self, user_id: int) -> list[int]:
        """The servers whose managers banned this member from the bot."""
        rows = await self._rows("SELECT guild_id FROM bans WHERE user_id = ?", (user_id,))
        return [int(row[0]) for row in rows]

    async def add_global_term(self, canonical: str, term: str) -> bool:
        return await self._changed(
            "INSERT OR IGNORE INTO global_terms (canonical, term) VALUES (?, ?)", (canonical, term)
        )

    async def remove_global_term(self, canonical: str) -> bool:
        return await self._changed("DELETE FROM global_terms WHERE canonical = ?", (canonical,))

    async def global_terms(self) -> list[str]:
        rows = await self._rows("SELECT term FROM global_terms ORDER BY rowid")
        return [str(row[0]) for row in rows]

    async def log_owner_action(self, actor: int, action: str, target: str, detail: str) -> None:
        async with self._write:
            await self._db.execute(
                "INSERT INTO owner_log (actor_id, action, target, detail, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (actor, action, target[:200], detail[:1000], self._clock()),
            )

    async def owner_actions(self, limit: int) -> list[OwnerAction]:
        """The owner's latest actions, newest first."""
        rows = await self._rows(
            "SELECT actor_id, action, target, detail, at FROM owner_log ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            OwnerAction(int(a), str(k), str(t or ""), str(d or ""), float(at))
            for a, k, t, d, at in rows
        ]

    async def count_refusal(self, day: str, guild_key: int, reason: str) -> None:
        async with self._write:
            await self._db.execute(
                "INSERT INTO refusal_counts (day, guild_key, reason, count) VALUES (?, ?, ?, 1)"
                " ON CONFLICT (day, guild_key, reason) DO UPDATE SET count = count + 1",
                (day, guild_key, reason),
            )

    async def refusals_on(self, day: str) -> dict[int, dict[str, int]]:
        """Refusals of one day: server (0: DMs) -> reason -> how many."""
        rows = await self._rows(
            "SELECT guild_key, reason, count FROM refusal_counts WHERE day = ?", (day,)
        )
        counts: dict[int, dict[str, int]] = {}
        for key, reason, count in rows:
            counts.setdefault(int(key), {})[str(reason)] = int(count)
        return counts

    async def spend_by_server(
        self, today: str, month_start: str, only: int | None = None
    ) -> list[ServerSpend]:
        """Every server (0: all DMs) that spent anything this month, biggest spender first;
        with `only`, just that one."""
        where = "day >= ?"
        params: list[object] = [today, month_start]
        if only is not None:
            where += " AND guild_id IS ?"
            params.append(only or None)
        rows = await self._rows(
            f"""SELECT COALESCE(guild_id, 0) AS key,
                       SUM(CASE WHEN day = ? AND {_CHARGED_SQL} THEN units ELSE 0 END),
                       SUM(CASE WHEN {_CHARGED_SQL} THEN units ELSE 0 END) AS month,
                       COALESCE(SUM(credits), 0),
                       SUM(credits IS NULL AND state = 'delivered')
                FROM jobs WHERE {where} GROUP BY key ORDER BY month DESC, key""",
            tuple(params),
        )
        return [
            ServerSpend(int(key), int(today_units), int(month), float(credits), int(unknown))
            for key, today_units, month, credits, unknown in rows
        ]

    async def set_job_credits(self, job_id: int, credits: float) -> None:
        await self._changed("UPDATE jobs SET credits = ? WHERE id = ?", (credits, job_id))

    # --- small key/value settings -------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        rows = await self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        async with self._write:
            await self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def delete_meta(self, key: str) -> None:
        async with self._write:
            await self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
