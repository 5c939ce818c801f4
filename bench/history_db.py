"""A database with a year of history, for the benchmark's 1 M-job scenario.

STAND-IN: the history branch of issue 12 ships the real `build_history` (same signature); it
replaces this file on merge. This one creates the project's schema with `open_storage` and
bulk-inserts finished jobs with sqlite3, then runs ANALYZE.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.store import open_storage

FIRST_SERVER_ID = 1_200_000_000_000_000_000
FIRST_MEMBER_ID = 1_100_000_000_000_000_000


async def _create_schema(path: Path) -> None:
    storage = await open_storage(path)
    await storage.close()


def build_history(
    path: Path,
    jobs: int = 1_000_000,
    *,
    members: int = 20_000,
    servers: int = 200,
    days: int = 365,
    seed: int = 1,
) -> None:
    """Create `path` with the bot's schema and `jobs` finished jobs over the `days` days before
    today, from `members` members (a few heavy, most light) in `servers` servers; ANALYZEd."""
    asyncio.run(_create_schema(path))
    rng = random.Random(seed)
    # Member n asks with weight 1/(n+1): member 0 is the heaviest, most ask a few times a year.
    weights = [1 / (n + 1) for n in range(members)]
    home = [rng.randrange(servers) for _ in range(members)]
    today = datetime.now(UTC).date()
    now = time.time()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=OFF")
        db.execute("BEGIN")
        member_ids = rng.choices(range(members), weights, k=jobs)
        rows = []
        for n, member in enumerate(member_ids):
            age = rng.randrange(1, days + 1)
            at = now - age * 86_400 + rng.random() * 3600
            delivered = rng.random() < 0.97
            rows.append(
                (
                    FIRST_MEMBER_ID + member,
                    FIRST_SERVER_ID + home[member],
                    FIRST_SERVER_ID + home[member] + 1_000,
                    (today - timedelta(days=age)).isoformat(),
                    1,
                    f"history picture {n} of a harbour at dawn",
                    "1:1",
                    "1K",
                    "delivered" if delivered else "refunded",
                    f"task{n:08d}",
                    None if delivered else "kie.ai failed",
                    at,
                    at + 20,
                    at + 2,
                    "reply" if delivered else None,
                    f"https://discord.com/channels/1/2/{n}" if delivered else None,
                )
            )
        db.executemany(
            """INSERT INTO jobs (user_id, guild_id, channel_id, day, units, prompt,
                   aspect_ratio, resolution, state, task_id, error, created_at, updated_at,
                   submitted_at, delivered_via, result_url)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            rows,
        )
        db.execute("COMMIT")
        db.execute("ANALYZE")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
