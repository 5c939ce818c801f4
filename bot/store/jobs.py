"""The job ledger, on either backend: `jobs` and `quota_adjustments`, and every sum a charge is
checked against.

Every generation is a row in `jobs` from the moment its units are reserved. A user's usage for a
day is the sum of units of their jobs that were not refunded, so charging is the insert itself
(inside one transaction with the checks: IMMEDIATE on SQLite, which holds the whole database's
write lock; on PostgreSQL after advisory locks on what the checks read, `_lock_keys`) and
refunding is a state change: the ledger cannot drift from the jobs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.domain import (
    CHARGED_STATES,
    OPEN_STATES,
    AdjustmentKind,
    DayTotals,
    DeliveryRoute,
    Hold,
    ImageRequest,
    Job,
    JobState,
    MemberTotals,
    NewJob,
    Origin,
    OverLimit,
    ReplyTarget,
    ServerSpend,
    SpendLimits,
    Usage,
    parse_aspect_ratio,
    parse_model,
    parse_resolution,
)
from bot.store.sql import Row, SqlDatabase


def _same(value: Any) -> Any:
    return value


# Job field <- the column of the same name, and how its value is read. The SELECT is built from
# these names: a new column is its migration plus one line here (and one in `_new_row` if it is
# set when the job is charged).
_JOB_FIELDS: dict[str, Callable[[Any], Any]] = {
    "id": _same,
    "user_id": _same,
    "guild_id": _same,
    "channel_id": _same,
    "day": _same,
    "units": _same,
    "state": JobState,
    "task_id": _same,
    "error": _same,
    "created_at": _same,
    "nonce": lambda value: value or "",
    "callback_token": lambda value: value or "",
    "delivered_via": lambda value: None if value is None else DeliveryRoute(value),
    "submitted_at": _same,
    "result_url": _same,
    "origin": lambda value: Origin(value or Origin.COMMAND),
    "parent_job_id": _same,
    "quota_limit": _same,
    "deleted_at": _same,
    "spoiler": bool,
    "credits": _same,
    "image_url": _same,
    "delivered_at": _same,
    "forgotten_at": _same,
    "batch_id": _same,
    "batch_index": _same,
    "batch_size": _same,
    "private": bool,
    "locale": _same,
    "kie_account": _same,
}
# The interaction a job answers (`Job.reply`), kept in four columns.
_REPLY_COLUMNS = ("application_id", "interaction_token", "interaction_at", "attachment_limit")
# What to draw (`Job.image`), kept in nine: the first reference in its own columns (as
# before several were allowed), any more as a JSON list beside it (NULL when there are none).
_IMAGE_COLUMNS = (
    "prompt",
    "aspect_ratio",
    "resolution",
    "model",
    "reference_url",
    "input_url",
    "more_reference_urls",
    "more_input_urls",
    "nsfw_checker",
)
_SELECT_JOBS = f"SELECT {', '.join((*_JOB_FIELDS, *_REPLY_COLUMNS, *_IMAGE_COLUMNS))} FROM jobs"


def _image(row: Row) -> ImageRequest:
    return ImageRequest(
        prompt=row["prompt"],
        aspect_ratio=parse_aspect_ratio(row["aspect_ratio"]),
        resolution=parse_resolution(row["resolution"]),
        model=parse_model(row["model"]),
        reference_urls=_urls(row["reference_url"], row["more_reference_urls"]),
        input_urls=_urls(row["input_url"], row["more_input_urls"]),
        nsfw_checker=bool(row["nsfw_checker"]),
    )


def _urls(first: str | None, more: str | None) -> tuple[str, ...]:
    if not first:
        return ()
    rest = json.loads(more) if more else []
    return (first, *(str(url) for url in rest))


def _url_columns(urls: tuple[str, ...]) -> tuple[str | None, str | None]:
    """The first of `urls` and the JSON list of the rest (each None when there is none)."""
    first = urls[0] if urls else None
    return first, (json.dumps(list(urls[1:])) if len(urls) > 1 else None)


def _image_columns(image: ImageRequest) -> dict[str, object]:
    reference_url, more_reference_urls = _url_columns(image.reference_urls)
    input_url, more_input_urls = _url_columns(image.input_urls)
    return {
        "prompt": image.prompt,
        "aspect_ratio": image.aspect_ratio,
        "resolution": image.resolution,
        "model": image.model,
        "reference_url": reference_url,
        "input_url": input_url,
        "more_reference_urls": more_reference_urls,
        "more_input_urls": more_input_urls,
        "nsfw_checker": image.nsfw_checker,
    }


def _job(row: Row) -> Job:
    reply = None
    if row["application_id"] is not None and row["interaction_token"]:
        reply = ReplyTarget(
            row["application_id"],
            row["interaction_token"],
            row["interaction_at"],
            row["attachment_limit"],
        )
    fields = {name: read(row[name]) for name, read in _JOB_FIELDS.items()}
    return Job(reply=reply, image=_image(row), **fields)


def _new_row(job: NewJob, limits: SpendLimits, now: float) -> dict[str, object]:
    """The columns of a newly charged job, by name."""
    reply = job.reply
    return {
        "user_id": job.user_id,
        "guild_id": job.guild_id,
        "channel_id": job.channel_id,
        "day": job.day,
        "units": job.units,
        **_image_columns(job.image),
        "state": JobState.RESERVED.value,
        "created_at": now,
        "updated_at": now,
        "application_id": reply.application_id if reply else None,
        "interaction_token": reply.token if reply else None,
        "interaction_at": reply.created_at if reply else None,
        "attachment_limit": reply.attachment_limit if reply else None,
        "nonce": secrets.token_hex(10),  # Discord nonces are at most 25 characters
        "callback_token": secrets.token_urlsafe(24),
        "origin": job.origin.value,
        "parent_job_id": job.parent_job_id,
        "quota_limit": limits.member,
        "spoiler": job.spoiler,
        "batch_size": job.count,
        "private": job.private,
        "locale": job.locale,
    }


def _insert(table: str, row: dict[str, object]) -> str:
    """An INSERT of `row`'s columns by name (the names are this module's constants)."""
    return (
        f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(':' + name for name in row)})"
    )


# The states whose units count, and those of unfinished jobs: constants, so they are safe to
# write into SQL. Written out (not bound), the open states match the partial index `jobs_open`
# (migration 9): SQLite uses a partial index only when the query's own WHERE names its terms.
_CHARGED_SQL = "state IN (" + ", ".join(f"'{s.value}'" for s in CHARGED_STATES) + ")"
_OPEN_SQL = "state IN (" + ", ".join(f"'{s.value}'" for s in OPEN_STATES) + ")"

# The sums a charge is checked against, as scalar subqueries over named parameters (:user,
# :guild, :day). A reset by an admin makes the member's jobs charged before it stop counting.
_MEMBER_USED_SQL = f"""(SELECT COALESCE(SUM(units), 0) FROM jobs
    WHERE user_id = :user AND guild_id IS :guild AND day = :day AND {_CHARGED_SQL}
      AND created_at > COALESCE(
        (SELECT MAX(at) FROM quota_adjustments
          WHERE user_id = :user AND guild_id IS :guild AND day = :day
            AND kind = '{AdjustmentKind.RESET.value}'), 0))"""
_MEMBER_GRANTED_SQL = f"""(SELECT COALESCE(SUM(units), 0) FROM quota_adjustments
    WHERE user_id = :user AND guild_id IS :guild AND day = :day
      AND kind = '{AdjustmentKind.GRANT.value}')"""
_SERVER_SPENT_SQL = f"""(SELECT COALESCE(SUM(units), 0) FROM jobs
    WHERE guild_id IS :guild AND day = :day AND {_CHARGED_SQL})"""
_DAY_SPENT_SQL = f"(SELECT COALESCE(SUM(units), 0) FROM jobs WHERE day = :day AND {_CHARGED_SQL})"


# At most this many charges in one transaction (each is two statements; the group's jobs are
# read back in one statement with one parameter each).
MAX_CHARGES_PER_COMMIT = 256


@dataclass(frozen=True)
class _Sums:
    """What a member, a server and everyone have charged today (and the member's grants)."""

    used: int
    granted: int
    server: int
    total: int


def _lock_keys(job: NewJob, limits: SpendLimits) -> tuple[str, ...]:
    """What a charge's checks read: the member's day and the server's (always: two processes
    may briefly disagree on whether a server has a budget), and the whole day's under a total
    cap (the one setting every process shares)."""
    keys = (f"member {job.day} {job.user_id} {job.guild_id}", f"server {job.day} {job.guild_id}")
    return (*keys, f"day {job.day}") if limits.total_cap is not None else keys


def _over(sums: _Sums, units: int, limits: SpendLimits, guild_id: int | None) -> OverLimit | None:
    """The first limit charging `units` on top of `sums` would exceed, or None (a server's
    budget is for its own members; direct messages have none)."""
    if sums.used + units > limits.member_limit(sums.granted):
        return OverLimit.QUOTA
    budget = limits.server_budget if guild_id is not None else None
    if budget is not None and sums.server + units > budget:
        return OverLimit.BUDGET
    if limits.server_cap is not None and sums.server + units > limits.server_cap:
        return OverLimit.SERVER_CAP
    if limits.total_cap is not None and sums.total + units > limits.total_cap:
        return OverLimit.TOTAL_CAP
    return None


@dataclass(eq=False)
class _Waiting:
    """A charge asked for and not yet committed; `result` is set once its group commits."""

    job: NewJob
    limits: SpendLimits
    row: dict[str, object]
    result: asyncio.Future[list[Job] | OverLimit] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _Uncommitted:
    """The units of charges asked for whose transaction has not reached its COMMIT, per
    member, per server and in all, for each day: what the checks add to what they read."""

    def __init__(self) -> None:
        self._counted: dict[_Waiting, NewJob] = {}
        self._units: Counter[tuple[object, ...]] = Counter()
        # Each member's holds, oldest first (a dict keeps the order they were taken in).
        self._holds: dict[tuple[str, int, int | None], dict[Hold, None]] = {}

    @property
    def count(self) -> int:
        return len(self._counted)

    def remember(self, key: _Waiting, charge: NewJob) -> None:
        if key not in self._counted:
            self._counted[key] = charge
            self._change(charge, charge.total_units)

    def forget(self, key: _Waiting) -> None:
        charge = self._counted.pop(key, None)
        if charge is not None:
            self._change(charge, -charge.total_units)

    def hold(self, hold: Hold) -> None:
        self._holds.setdefault((hold.day, hold.user_id, hold.guild_id), {})[hold] = None

    def release(self, hold: Hold) -> None:
        key = (hold.day, hold.user_id, hold.guild_id)
        holds = self._holds.get(key)
        if holds is None:
            return
        holds.pop(hold, None)
        if not holds:
            del self._holds[key]

    def added_to(
        self, sums: _Sums, user_id: int, guild_id: int | None, day: str, own: Hold | None
    ) -> _Sums:
        units = self._units
        held = 0
        for hold in self._holds.get((day, user_id, guild_id), {}):
            if hold is own:
                break
            held += hold.units
        return _Sums(
            used=sums.used + units["member", day, user_id, guild_id] + held,
            granted=sums.granted,
            server=sums.server + units["server", day, guild_id],
            total=sums.total + units["total", day],
        )

    def _change(self, job: NewJob, units: int) -> None:
        for key in (
            ("member", job.day, job.user_id, job.guild_id),
            ("server", job.day, job.guild_id),
            ("total", job.day),
        ):
            self._units[key] += units
            if not self._units[key]:
                del self._units[key]


def _settle(
    group: list[_Waiting],
    results: list[list[Job] | OverLimit] | None,
    error: BaseException | None,
    uncommitted: _Uncommitted,
) -> None:
    for n, waiting in enumerate(group):
        uncommitted.forget(waiting)
        if waiting.result.done():
            continue
        if results is not None:
            waiting.result.set_result(results[n])
        else:
            assert error is not None
            waiting.result.set_exception(error)


# What forgetting a finished job blanks (its words, references, links, kie.ai's task and the
# reason text, which can quote the prompt), keeping what the ledger's totals are made of.
_FORGET = """prompt = '', reference_url = NULL, input_url = NULL,
    more_reference_urls = NULL, more_input_urls = NULL,
    result_url = NULL, image_url = NULL, task_id = NULL,
    error = CASE WHEN instr(error, ':') > 0
                 THEN substr(error, 1, instr(error, ':') - 1) ELSE error END,
    forgotten_at = :now"""
_FINISHED_SQL = f"('{JobState.DELIVERED.value}', '{JobState.REFUNDED.value}')"


class SqlJobLedger:
    """The `JobLedger` over SQL: the `jobs` and `quota_adjustments` tables.

    It owns every charge, refund and job state change. `JobService` calls it through a job's
    life, `QuotaBook`, `Admission` and `ServerAdmin` read and adjust usage through it, and the
    cogs' statistics read it. Built by `open_storage`; lives as long as the database.
    """

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database
        self._waiting: list[_Waiting] = []  # charges asked for, not yet in a transaction
        self._uncommitted = _Uncommitted()  # their units, until their COMMIT is under way
        self._charging: asyncio.Task[None] | None = None

    @property
    def charges_waiting(self) -> int:
        """Charges asked for whose transaction has not reached its COMMIT."""
        return self._uncommitted.count

    # --- quota ledger -------------------------------------------------------------------------

    async def over_limit(
        self,
        user_id: int,
        guild_id: int | None,
        day: str,
        units: int,
        limits: SpendLimits,
        hold: Hold | None = None,
    ) -> OverLimit | None:
        """Which limit charging `units` now would exceed, or None (a read; `reserve` decides).

        Reads the last commit on the reading connection, so it never waits behind a burst of
        charges, and adds the charges asked for whose transaction has not reached its COMMIT
        (they are not in what was read), and the member's holds taken before `hold` (this
        command's own): so a member asking past their quota in a burst is refused here, before
        any public answer, and the earlier of their commands keeps its place. A group
        committing while this read ran is left out rather than maybe counted twice: this check
        does not refuse what fits, and the charge's own check (`_charge`) stays the authority
        for the rare request that passes here and loses there.
        """
        sums = await self._sums(user_id, guild_id, day, limits)
        counted = self._uncommitted.added_to(sums, user_id, guild_id, day, hold)
        return _over(counted, units, limits, guild_id)

    async def _sums(
        self, user_id: int, guild_id: int | None, day: str, limits: SpendLimits
    ) -> _Sums:
        """Every sum the limits need, and only those, in one statement."""
        need_server = (limits.server_budget is not None and guild_id is not None) or (
            limits.server_cap is not None
        )
        # The member's and their server's sums read as many rows as their day's jobs (bounded
        # by their quota and the server's cap): a `lookup`. The whole day's total grows with
        # the deployment: off the loop.
        read = self._db.rows if limits.total_cap is not None else self._db.lookup
        rows = await read(
            f"""SELECT {_MEMBER_USED_SQL} AS used, {_MEMBER_GRANTED_SQL} AS granted,
                       CASE WHEN :server THEN {_SERVER_SPENT_SQL} ELSE 0 END AS server,
                       CASE WHEN :total THEN {_DAY_SPENT_SQL} ELSE 0 END AS total""",
            {
                "user": user_id,
                "guild": guild_id,
                "day": day,
                "server": need_server,
                "total": limits.total_cap is not None,
            },
        )
        sums = rows[0]
        return _Sums(
            used=int(sums["used"]),
            granted=int(sums["granted"]),
            server=int(sums["server"]),
            total=int(sums["total"]),
        )

    def hold(self, user_id: int, guild_id: int | None, day: str, units: int) -> Hold:
        """A place for a command's charge, taken before its checks: the checks of the member's
        later commands count it until the charge is asked for (`reserve` with this hold, which
        then counts as a charge on its way) or it is `release`d (refused, failed)."""
        hold = Hold(user_id, guild_id, day, units)
        self._uncommitted.hold(hold)
        return hold

    def release(self, hold: Hold) -> None:
        """Stop counting a hold (nothing happens if its charge was asked for already)."""
        self._uncommitted.release(hold)

    async def reserve(
        self, job: NewJob, limits: SpendLimits, hold: Hold | None = None
    ) -> Job | OverLimit:
        """`reserve_batch` for one image: the job, or the limit it would exceed."""
        jobs = await self.reserve_batch(job, limits, hold)
        return jobs if isinstance(jobs, OverLimit) else jobs[0]

    async def reserve_batch(
        self, job: NewJob, limits: SpendLimits, hold: Hold | None = None
    ) -> list[Job] | OverLimit:
        """Charge `job.units` for each of `job.count` images and record one job each (a batch
        when more than one), all or none, if they stay within every limit of the day:
        the member's (plus grants, under the operator's ceiling), the server's budget and cap,
        and the operator's total. Returns once the charge is committed (durable), or with the
        limit it would exceed.

        Charges are committed in groups: those asked for while one group's transaction is
        under way form the next (see `_charge_waiting`), so a burst costs one fsync per group
        rather than one per command. Shielded: a cancelled command (say, at shutdown) neither
        leaves the connection inside an open transaction nor takes the others' charges down.
        """
        waiting = _Waiting(job, limits, _new_row(job, limits, self._db.clock()))
        self._waiting.append(waiting)
        self._uncommitted.remember(waiting, job)
        if hold is not None:
            self._uncommitted.release(hold)  # counted as this charge from now on
        if self._charging is None or self._charging.done():
            self._charging = asyncio.create_task(self._charge_waiting(), name="charge-jobs")
        return await asyncio.shield(waiting.result)

    async def settle(self) -> None:
        """Wait for every charge asked for to be committed or refused (before closing)."""
        while self._charging is not None and not self._charging.done():
            await asyncio.wait({self._charging})

    async def _charge_waiting(self) -> None:
        """Commit the waiting charges, a group at a time, until none is left."""
        while self._waiting:
            group = self._waiting[:MAX_CHARGES_PER_COMMIT]
            del self._waiting[:MAX_CHARGES_PER_COMMIT]
            try:
                results = await self._charge(group)
                # Those the transaction did not reach (it ended early for another write) are
                # next, in their order.
                self._waiting[:0] = group[len(results) :]
                group = group[: len(results)]
            except Exception as error:
                if len(group) == 1:
                    _settle(group, None, error, self._uncommitted)
                    continue
                # One charge's failure must not refuse the rest: each alone, in order.
                for waiting in group:
                    try:
                        _settle([waiting], await self._charge([waiting]), None, self._uncommitted)
                    except Exception as error:
                        _settle([waiting], None, error, self._uncommitted)
                continue
            except BaseException:
                for waiting in group + self._waiting:
                    self._uncommitted.forget(waiting)
                    waiting.result.cancel()
                self._waiting.clear()
                raise
            _settle(group, results, None, self._uncommitted)

    async def _charge(self, group: list[_Waiting]) -> list[list[Job] | OverLimit]:
        """One transaction: each charge checked in order against the day's sums, which include
        the charges before it in the group, then inserted; no other writer can charge what
        these checks read in between (SQLite: the IMMEDIATE transaction's database lock;
        PostgreSQL: the group's advisory locks), so any number of simultaneous commands, in
        any number of processes, cannot overspend a limit.

        Returns the outcomes of the group's first charges: all of them, unless another write
        (a job's claim to be sent, say) waited for the database meanwhile. Then the transaction
        commits after the charge under way, and the rest are left for the next; at least one
        is always charged.
        """
        outcomes: list[list[int] | OverLimit] = []
        reached: list[_Waiting] = []
        try:
            async with self._db.transaction() as db:
                # Another process charging the same member, server (or day, under a total
                # cap) waits here until this COMMIT, so the sums read below stay true.
                await db.lock(sorted({k for w in group for k in _lock_keys(w.job, w.limits)}))
                for waiting in group:
                    if reached and self._db.writers_waiting():
                        break
                    reached.append(waiting)
                    job, limits = waiting.job, waiting.limits
                    sums = await self._sums(job.user_id, job.guild_id, job.day, limits)
                    refusal = _over(sums, job.total_units, limits, job.guild_id)
                    if refusal is not None:
                        outcomes.append(refusal)
                        continue
                    ids: list[int] = []
                    for index in range(job.count):
                        row = waiting.row
                        if index:
                            # Each image is its own kie.ai task: its own nonce and callback.
                            row = {
                                **row,
                                "batch_id": ids[0],
                                "batch_index": index,
                                "nonce": secrets.token_hex(10),
                                "callback_token": secrets.token_urlsafe(24),
                            }
                        ids.append(await db.insert(_insert("jobs", row), row))
                    if job.count > 1:
                        await db.execute("UPDATE jobs SET batch_id = id WHERE id = ?", (ids[0],))
                    outcomes.append(ids)
                # The COMMIT is the next statement: from here a read may see these rows, so
                # the checks stop adding them (counting them twice could refuse what fits).
                for waiting in reached:
                    self._uncommitted.forget(waiting)
        except BaseException:
            for waiting in reached:  # rolled back: not charged, still asked for
                self._uncommitted.remember(waiting, waiting.job)
            raise
        # Committed: only now may anyone see (and submit) these jobs.
        ids = [i for outcome in outcomes if not isinstance(outcome, OverLimit) for i in outcome]
        found: dict[int, Job] = {}
        if ids:
            rows = await self._db.lookup(
                f"{_SELECT_JOBS} WHERE id IN ({', '.join('?' * len(ids))})", ids
            )
            found = {row["id"]: _job(row) for row in rows}
        return [o if isinstance(o, OverLimit) else [found[i] for i in o] for o in outcomes]

    async def usage(self, user_id: int, guild_id: int | None, day: str) -> Usage:
        """A member's charged units in one server (None: direct messages) on one day."""
        rows = await self._db.lookup(
            f"SELECT {_MEMBER_USED_SQL} AS used, {_MEMBER_GRANTED_SQL} AS granted",
            {"user": user_id, "guild": guild_id, "day": day},
        )
        return Usage(used=int(rows[0]["used"]), granted=int(rows[0]["granted"]))

    async def server_units(self, guild_id: int | None, day: str) -> int:
        """Units charged in one server (None: all direct messages) on one day, over all members
        (the server budget and cap)."""
        rows = await self._db.rows(f"SELECT {_SERVER_SPENT_SQL}", {"guild": guild_id, "day": day})
        return int(rows[0][0])

    async def total_units(self, day: str) -> int:
        """Units charged on one day over every server and DM (the operator's total cap)."""
        rows = await self._db.rows(f"SELECT {_DAY_SPENT_SQL}", {"day": day})
        return int(rows[0][0])

    async def add_quota_adjustment(
        self, guild_id: int, user_id: int, day: str, kind: AdjustmentKind, units: int, actor: int
    ) -> None:
        """Record an admin's grant of extra units (kind "grant") or a reset ("reset")."""
        await self._db.execute(
            "INSERT INTO quota_adjustments (guild_id, user_id, day, kind, units, actor_id, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (guild_id, user_id, day, kind, units, actor, self._db.clock()),
        )

    async def total_units_charged(self) -> int:
        """Units charged and not refunded, over all users and days."""
        rows = await self._db.rows(
            f"""SELECT COALESCE(SUM(units), 0) FROM jobs
                WHERE state IN ({", ".join("?" * len(CHARGED_STATES))})""",
            CHARGED_STATES,
        )
        return int(rows[0][0])

    async def count_by_state(self) -> dict[JobState, int]:
        rows = await self._db.rows("SELECT state, COUNT(*) AS count FROM jobs GROUP BY state")
        return {JobState(row["state"]): int(row["count"]) for row in rows}

    # --- job states ---------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        rows = await self._db.lookup(f"{_SELECT_JOBS} WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def batch_jobs(self, batch_id: int) -> list[Job]:
        """Every job of one request for several images, in their order."""
        rows = await self._db.rows(
            f"{_SELECT_JOBS} WHERE batch_id = ? ORDER BY batch_index", (batch_id,)
        )
        return [_job(row) for row in rows]

    async def open_jobs(self) -> list[Job]:
        rows = await self._db.rows(f"{_SELECT_JOBS} WHERE {_OPEN_SQL} ORDER BY id")
        return [_job(row) for row in rows]

    async def begin_submit(self, job_id: int, account: str | None = None) -> bool:
        """Committed before createTask is sent: a crash after this must not resend it.
        `account`: the kie.ai account it is sent with; every later step uses that one."""
        return await self._transition(
            job_id,
            (JobState.RESERVED,),
            JobState.SUBMITTING,
            submitted_at=self._db.clock(),
            kie_account=account,
        )

    async def submissions_since(self, since: float) -> list[float]:
        """When createTask calls went out after `since` (Unix time), oldest first."""
        rows = await self._db.rows(
            "SELECT submitted_at FROM jobs WHERE submitted_at >= ? ORDER BY submitted_at",
            (since,),
        )
        return [float(row["submitted_at"]) for row in rows]

    async def recent_run_seconds(self, since: float, limit: int) -> list[float]:
        """From createTask to the image delivered, for the latest `limit` jobs sent after
        `since` (Unix time) and delivered, newest first."""
        rows = await self._db.rows(
            """SELECT delivered_at - submitted_at AS took FROM jobs
               WHERE submitted_at >= ? AND delivered_at IS NOT NULL
               ORDER BY submitted_at DESC LIMIT ?""",
            (since, limit),
        )
        return [float(row["took"]) for row in rows]

    async def mark_submitted(self, job_id: int, task_id: str) -> bool:
        """True also when kie.ai's callback named this very task first (`adopt_task`): the
        callback can outrun createTask's own answer."""
        if await self._transition(
            job_id, (JobState.SUBMITTING,), JobState.SUBMITTED, task_id=task_id
        ):
            return True
        rows = await self._db.rows("SELECT state, task_id FROM jobs WHERE id = ?", (job_id,))
        return (
            bool(rows)
            and rows[0]["state"] == JobState.SUBMITTED.value
            and rows[0]["task_id"] == task_id
        )

    async def adopt_task(self, job_id: int, task_id: str) -> bool:
        """A job whose createTask's answer was lost (its process stopped or died, the call
        was cut) learns its task from kie.ai's callback, whose path is the job's secret."""
        return await self._transition(
            job_id, (JobState.SUBMITTING,), JobState.SUBMITTED, task_id=task_id
        )

    async def return_to_line(self, job_id: int) -> bool:
        """The job is reserved again, to be sent later: kie.ai refused a claimed createTask
        before creating anything (maintenance, no connection) and is down, or a createTask cut
        off by a crash was never answered by a callback (`JobService._adopted_task`)."""
        return await self._transition(job_id, (JobState.SUBMITTING,), JobState.RESERVED)

    async def begin_delivery(self, job_id: int, image_url: str | None = None) -> bool:
        """`image_url`: kie.ai's link the image came from, when known (a batch keeps it here)."""
        return await self._transition(
            job_id,
            (JobState.SUBMITTED, JobState.DELIVERING),
            JobState.DELIVERING,
            image_url=image_url,
        )

    async def mark_delivered(
        self,
        job_id: int,
        via: DeliveryRoute,
        url: str | None = None,
        image_url: str | None = None,
    ) -> bool:
        """`url`: the message showing the image; `image_url`: kie.ai's link it came from."""
        return await self._transition(
            job_id,
            (JobState.DELIVERING,),
            JobState.DELIVERED,
            delivered_via=via,
            result_url=url,
            image_url=image_url,
        )

    async def mark_batch_delivered(
        self, job_ids: list[int], via: DeliveryRoute, url: str | None = None
    ) -> bool:
        """The batch message went out: its delivered jobs are all marked in one statement, so
        a restart finds all of them delivered or none; False when none was left to mark."""
        changed = await self._db.changed_count(
            f"""UPDATE jobs SET state = ?, delivered_via = ?, result_url = ?,
                   interaction_token = NULL, delivered_at = ?, updated_at = ?
                WHERE id IN ({", ".join("?" * len(job_ids))}) AND state = ?""",
            (
                JobState.DELIVERED.value,
                via,
                url,
                self._db.clock(),
                self._db.clock(),
                *job_ids,
                JobState.DELIVERING,
            ),
        )
        return changed > 0

    async def recent_jobs(self, user_id: int, guild_id: int | None, limit: int) -> list[Job]:
        """A member's latest finished generations in one server (or in DMs), newest first."""
        rows = await self._db.rows(
            f"""{_SELECT_JOBS}
                WHERE user_id = ? AND guild_id IS ? AND state IN (?, ?)
                  AND forgotten_at IS NULL
                ORDER BY id DESC LIMIT ?""",
            (user_id, guild_id, JobState.DELIVERED, JobState.REFUNDED, limit),
        )
        return [_job(row) for row in rows]

    async def cancel(self, job_id: int, reason: str) -> bool:
        """Refund a job kie.ai has not seen, in one conditional UPDATE: only from `reserved`,
        so it and `begin_submit` (reserved → submitting) cannot both succeed, and two presses
        refund once. True only for the call that cancelled it."""
        return await self._transition(job_id, (JobState.RESERVED,), JobState.REFUNDED, error=reason)

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
        delivered_via: DeliveryRoute | None = None,
        submitted_at: float | None = None,
        result_url: str | None = None,
        image_url: str | None = None,
        kie_account: str | None = None,
    ) -> bool:
        # The WHERE on the current state makes each transition happen at most once. A finished
        # job forgets its interaction token: it is a credential, kept only while needed.
        finished = to_state in (JobState.DELIVERED, JobState.REFUNDED)
        now = self._db.clock()
        return await self._db.changed(
            f"""UPDATE jobs SET state = ?, task_id = COALESCE(?, task_id),
                   error = COALESCE(?, error), delivered_via = COALESCE(?, delivered_via),
                   submitted_at = COALESCE(?, submitted_at),
                   result_url = COALESCE(?, result_url),
                   image_url = COALESCE(?, image_url),
                   kie_account = COALESCE(?, kie_account),
                   delivered_at = CASE WHEN ? THEN ? ELSE delivered_at END,
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
                image_url,
                kie_account,
                to_state is JobState.DELIVERED,
                now,
                finished,
                now,
                job_id,
                *from_states,
            ),
        )

    # --- results and statistics ---------------------------------------------------------------

    async def set_input_urls(self, job_id: int, urls: tuple[str, ...]) -> None:
        """The reference images' copies on kie.ai's file host so far, in order, kept so a
        restart need not upload them again."""
        first, more = _url_columns(urls)
        await self._db.changed(
            "UPDATE jobs SET input_url = ?, more_input_urls = ? WHERE id = ?",
            (first, more, job_id),
        )

    async def set_job_credits(self, job_id: int, credits: float) -> None:
        await self._db.changed("UPDATE jobs SET credits = ? WHERE id = ?", (credits, job_id))

    async def forget_history(self, user_id: int, guild_id: int | None, everywhere: bool) -> int:
        """Blank what a member's finished jobs said and linked to (prompt, references, result
        links, kie.ai's task id and reason text), in one server (None: direct messages) or
        `everywhere`; how many were forgotten. Units, day, state, server and credits stay, so
        every total of the ledger is unchanged; open jobs are left to finish."""
        where = "user_id = :user" + ("" if everywhere else " AND guild_id IS :guild")
        return await self._db.changed_count(
            f"""UPDATE jobs SET {_FORGET}
                WHERE {where} AND state IN {_FINISHED_SQL} AND forgotten_at IS NULL""",
            {"user": user_id, "guild": guild_id, "now": self._db.clock()},
        )

    async def expire_history(self, before_day: str, batch: int = 5000) -> int:
        """Blank, as `forget_history` does, every finished job of a day before `before_day`
        (HISTORY_DAYS); how many. A batch per statement, so the write lock is never held
        long: a year of history expires without holding up the charges. The index is named:
        with most old jobs blanked already, the planner would otherwise walk every finished
        job by state to find the few left."""
        total = 0
        while True:
            changed = await self._db.changed_count(
                f"""UPDATE jobs SET {_FORGET}
                    WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_unforgotten_day
                                 WHERE day < :day AND forgotten_at IS NULL
                                   AND state IN {_FINISHED_SQL}
                                 LIMIT :batch)""",
                {"day": before_day, "batch": batch, "now": self._db.clock()},
            )
            total += changed
            if changed < batch:
                return total
            await asyncio.sleep(0)  # let the charges waiting for the lock go first

    async def mark_result_deleted(self, job_id: int) -> bool:
        return await self._db.changed(
            "UPDATE jobs SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
            (self._db.clock(), job_id),
        )

    async def daily_totals(self, guild_id: int, since_day: str) -> list[DayTotals]:
        """Per UTC day from `since_day` on: images delivered, jobs failed, units charged."""
        rows = await self._db.rows(
            f"""SELECT day, SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END) AS delivered,
                       SUM(CASE WHEN state = 'refunded' THEN 1 ELSE 0 END) AS failed,
                       SUM(CASE WHEN {_CHARGED_SQL} THEN units ELSE 0 END) AS units
                FROM jobs WHERE guild_id = ? AND day >= ? GROUP BY day ORDER BY day""",
            (guild_id, since_day),
        )
        return [
            DayTotals(str(row["day"]), int(row["delivered"]), int(row["failed"]), int(row["units"]))
            for row in rows
        ]

    async def top_members(self, guild_id: int, since_day: str, limit: int) -> list[MemberTotals]:
        rows = await self._db.rows(
            f"""SELECT user_id, SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END) AS delivered,
                       SUM(CASE WHEN {_CHARGED_SQL} THEN units ELSE 0 END) AS spent
                FROM jobs WHERE guild_id = ? AND day >= ?
                GROUP BY user_id HAVING SUM(CASE WHEN {_CHARGED_SQL} THEN units ELSE 0 END) > 0
                ORDER BY spent DESC, user_id LIMIT ?""",
            (guild_id, since_day, limit),
        )
        return [
            MemberTotals(int(row["user_id"]), int(row["delivered"]), int(row["spent"]))
            for row in rows
        ]

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
        rows = await self._db.rows(
            f"""SELECT COALESCE(guild_id, 0) AS key,
                       SUM(CASE WHEN day = ? AND {_CHARGED_SQL} THEN units ELSE 0 END) AS today,
                       SUM(CASE WHEN {_CHARGED_SQL} THEN units ELSE 0 END) AS month,
                       COALESCE(SUM(credits), 0) AS credits,
                       SUM(CASE WHEN credits IS NULL AND state = 'delivered' THEN 1 ELSE 0 END)
                         AS unreported
                FROM jobs WHERE {where} GROUP BY key ORDER BY month DESC, key""",
            tuple(params),
        )
        return [
            ServerSpend(
                int(row["key"]),
                int(row["today"]),
                int(row["month"]),
                float(row["credits"]),
                int(row["unreported"]),
            )
            for row in rows
        ]
