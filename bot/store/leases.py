"""Job leases in SQL: which process runs each open job, until when (the `jobs` table's
`lease_owner` and `lease_until`)."""

from __future__ import annotations

from bot.domain import OPEN_STATES
from bot.store.sql import SqlDatabase

# Constants, so they are safe to write into SQL (and match the partial index `jobs_open`).
OPEN_SQL = "state IN (" + ", ".join(f"'{s.value}'" for s in OPEN_STATES) + ")"
# An unleased open job (just charged, not yet claimed by the process that charged it) counts
# as leased until `grace` after it was made; a released one (`lease_until` 0) at once.
_EXPIRED_SQL = "COALESCE(lease_until, created_at + :grace) < :now"


class SqlJobLeases:
    """The `JobLeases` over SQL. Every change is one conditional statement (or, for a takeover,
    one transaction whose rows are locked and skipped by other processes), so two processes
    never both hold a job. Built by `open_storage`; lives as long as the database."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def claim(self, job_id: int, owner: str, until: float, grace: float) -> bool:
        """Lease one open job that nobody else holds (unleased, ours, or expired)."""
        return await self._db.changed(
            "UPDATE jobs SET lease_owner = :owner, lease_until = :until"
            f" WHERE id = :id AND {OPEN_SQL}"
            f" AND (lease_owner IS NULL OR lease_owner = :owner OR {_EXPIRED_SQL})",
            {
                "owner": owner,
                "until": until,
                "id": job_id,
                "grace": grace,
                "now": self._db.clock(),
            },
        )

    async def take_expired(self, owner: str, until: float, grace: float, limit: int) -> list[int]:
        """Lease up to `limit` open jobs whose lease ran out (their process died); their ids.
        On PostgreSQL the rows are locked as they are read and other processes skip them, so
        two processes taking over at once split the jobs between them."""
        params = {"grace": grace, "now": self._db.clock(), "limit": limit}
        async with self._db.transaction() as transaction:
            rows = await self._db.rows(
                f"SELECT id FROM jobs WHERE {OPEN_SQL} AND {_EXPIRED_SQL}"
                f" ORDER BY id LIMIT :limit{self._db.lock_rows}",
                params,
            )
            ids = [int(row["id"]) for row in rows]
            for job_id in ids:
                # A job kie.ai has not seen goes back into a line, so it holds no running slot
                # (`bot.runslots`) until it is let in again; one at kie.ai keeps its slot.
                await transaction.execute(
                    "UPDATE jobs SET lease_owner = ?, lease_until = ?,"
                    " run_slot = CASE WHEN state = 'reserved' THEN 0 ELSE run_slot END,"
                    " run_wanted = NULL WHERE id = ?",
                    (owner, until, job_id),
                )
        return ids

    async def renew(self, owner: str, until: float) -> int:
        """Extend every open job this process holds; how many it holds."""
        return await self._db.changed_count(
            f"UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND {OPEN_SQL}",
            (until, owner),
        )

    async def release(self, job_id: int, owner: str) -> None:
        await self._db.execute(
            "UPDATE jobs SET lease_owner = NULL, lease_until = 0 WHERE id = ? AND lease_owner = ?",
            (job_id, owner),
        )

    async def release_all(self, owner: str) -> int:
        """Give up this owner's open jobs: another process, or the next start, takes them at
        once."""
        return await self._db.changed_count(
            f"UPDATE jobs SET lease_owner = NULL, lease_until = 0"
            f" WHERE {OPEN_SQL} AND lease_owner = ?",
            (owner,),
        )

    async def holder(self, job_id: int) -> str | None:
        """Which process holds a job's lease (for status and tests)."""
        rows = await self._db.rows("SELECT lease_owner FROM jobs WHERE id = ?", (job_id,))
        return None if not rows or rows[0]["lease_owner"] is None else str(rows[0]["lease_owner"])
