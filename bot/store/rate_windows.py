"""kie.ai's rate windows shared by every bot process, in PostgreSQL (`kie_rate_slots`).

One row per call counted (or per hold after a 429), per account and kind. Times come from the
database's clock (`clock_timestamp()`), never a machine's: the processes' clocks may differ,
the database's is the one they share. A take is one short transaction under an advisory lock
per (account, kind), so two processes never both see the last free slot; rows that have left
their window are deleted as it goes, so the table holds at most a window's calls per account.

Processes refused a slot are remembered (`kie_rate_waiters`) in the order they were first
refused: a free slot goes to a process only when no process refused before it still waits, so
none starves behind processes that happen to ask at the right moment.
"""

from __future__ import annotations

from bot.store.interfaces import RateTaken
from bot.store.sql import SqlDatabase

# Seconds since the epoch by the database's clock, now (not the transaction's start).
_NOW = "extract(epoch FROM clock_timestamp())::float8"
# Seconds a refused process keeps its place after the time it was told to ask again.
WAITER_GRACE = 2.0


class SqlRateWindows:
    """The `RateWindows` over PostgreSQL. Built by `open_storage` for PostgreSQL only; lives as
    long as the database."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def take(
        self, account: str, kind: str, waiter: str, max_calls: int, window: float, hold: float
    ) -> RateTaken:
        mine = {"account": account, "kind": kind, "waiter": waiter}
        async with self._db.transaction() as transaction:
            await transaction.lock([f"kie-rate:{account}:{kind}"])
            await transaction.execute(
                "DELETE FROM kie_rate_slots"
                f" WHERE account = ? AND kind = ? AND counts_until <= {_NOW}",
                (account, kind),
            )
            rows = await self._db.rows(
                f"SELECT slots, counts_until - {_NOW} AS counts_for, on_wire"
                " FROM kie_rate_slots WHERE account = ? AND kind = ?",
                (account, kind),
            )
            counted = sorted(
                (
                    min(float(row["counts_for"]), window) if row["on_wire"] else row["counts_for"],
                    int(row["slots"]),
                )
                for row in rows
            )
            # Processes refused before this one (and still there) go first.
            ahead = await self._db.rows(
                "SELECT count(*) FROM kie_rate_waiters"
                " WHERE account = :account AND kind = :kind AND waiter <> :waiter"
                f" AND seen_until > {_NOW} AND since < COALESCE((SELECT since"
                " FROM kie_rate_waiters WHERE account = :account AND kind = :kind"
                f" AND waiter = :waiter), {_NOW})",
                mine,
            )
            slot: int | None = None
            if sum(slots for _, slots in counted) + int(ahead[0][0]) < max_calls:
                # Counted as on the wire until `finish`; if that never comes (the process
                # died), until `hold` from now: no call lasts longer than that.
                slot = await transaction.insert(
                    "INSERT INTO kie_rate_slots (account, kind, slots, counts_until, on_wire)"
                    f" VALUES (?, ?, 1, {_NOW} + ?, 1)",
                    (account, kind, hold),
                )
                await transaction.execute(
                    # Only this account's and kind's rows: those the lock above covers.
                    "DELETE FROM kie_rate_waiters WHERE account = :account AND kind = :kind"
                    f" AND (waiter = :waiter OR seen_until <= {_NOW})",
                    mine,
                )
            else:
                # Keeps its place (first refusal) while it comes back in time.
                patience = max((seconds for seconds, _ in counted), default=0.0) + WAITER_GRACE
                await transaction.execute(
                    "INSERT INTO kie_rate_waiters (account, kind, waiter, since, seen_until)"
                    f" VALUES (:account, :kind, :waiter, {_NOW}, {_NOW} + :patience)"
                    " ON CONFLICT (account, kind, waiter)"
                    " DO UPDATE SET seen_until = excluded.seen_until",
                    {**mine, "patience": patience},
                )
        return RateTaken(slot, tuple(counted))

    async def finish(self, slot: int, window: float) -> None:
        """The call has ended: it counts for `window` from now (kie.ai counted it when it
        arrived, before now)."""
        await self._db.execute(
            f"UPDATE kie_rate_slots SET counts_until = {_NOW} + ?, on_wire = 0 WHERE id = ?",
            (window, slot),
        )

    async def give_back(self, slot: int) -> None:
        """The call was not made after all."""
        await self._db.execute("DELETE FROM kie_rate_slots WHERE id = ?", (slot,))

    async def push_back(self, account: str, kind: str, max_calls: int, seconds: float) -> None:
        await self._db.execute(
            "INSERT INTO kie_rate_slots (account, kind, slots, counts_until, on_wire)"
            f" VALUES (?, ?, ?, {_NOW} + ?, 0)",
            (account, kind, max_calls, seconds),
        )
