"""A database with a year of history: `python -m bench.history_db PATH [--jobs N]`.

`build_history` creates the bot's own schema (the real migrations, through `open_storage`) and
fills it with finished jobs as a busy public bot would have after a year: mostly delivered,
some refunded; a few heavy members with tens of thousands of jobs and a long tail with a handful;
direct messages beside 200 servers; admins' grants and resets, a moderation log and the
refusals counted per day. It takes
seconds, not minutes: the rows are made by SQLite itself (one `INSERT … SELECT` over a recursive
counter, in one transaction, with the indexes dropped and then rebuilt from the very statements
the migrations created them with), and the numbers come from a seeded hash of the row number,
so the same arguments build the same history. It ends by starting the storage once more, so the
planner's statistics are what a running bot leaves behind.

The benchmark imports `build_history`; the query-plan test builds its database with it too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import time
from pathlib import Path

from bot.settings import Settings
from bot.store import open_storage

log = logging.getLogger(__name__)

# Discord-like ids, far apart so members, servers and channels never collide.
USER_BASE = 100_000_000_000_000_000
GUILD_BASE = 200_000_000_000_000_000
CHANNEL_BASE = 300_000_000_000_000_000
DM_CHANNEL_BASE = 400_000_000_000_000_000
MESSAGE_BASE = 600_000_000_000_000_000
APPLICATION_ID = 500_000_000_000_000_000
ADMIN_ID = 700_000_000_000_000_000

# The tables the bulk insert fills: their indexes are dropped first and rebuilt afterwards.
_FILLED = ("jobs", "quota_adjustments", "moderation_log", "refusal_counts")

# Uniform numbers in [0, 1) from the row number n: one multiplicative (Weyl) hash per number,
# each with its own odd multiplier near 2**32 times an irrational, so they are independent
# enough and every product stays far below 2**63 (SQLite integers). Each is computed directly
# from n: SQLite flattens these CTEs into one expression per column, so chained rounds would
# be recomputed at every use.
_JOBS_SQL = """
WITH RECURSIVE
  seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n + 1 < :jobs),
  hashed AS (
    SELECT n,
      (n * 2654435769 + :seed * 40503) % 4294967296 AS a,
      (n * 3242174889 + :seed * 1013) % 4294967296 AS b,
      (n * 1833778363 + :seed * 7) % 4294967296 AS c,
      (n * 3735928559 + :seed * 337) % 4294967296 AS d,
      (n * 2246822519 + :seed * 91) % 4294967296 AS e
    FROM seq
  ),
  pick AS (
    SELECT n, b, c, d, e,
      -- u**3 skews members: member 0 has ~3.7 % of all jobs, the next ones thousands each.
      CAST(:members * (a / 4294967296.0) * (a / 4294967296.0) * (a / 4294967296.0)
           AS INTEGER) AS member,
      b / 4294967296.0 AS where_u,
      :start + (n + c / 4294967296.0) * :span / :jobs AS at,
      d / 4294967296.0 AS fate_u,
      e / 4294967296.0 AS size_u
    FROM hashed
  ),
  placed AS (
    SELECT *,
      CASE WHEN where_u < 0.05 THEN NULL  -- direct messages
           WHEN where_u < 0.10 THEN c / 7 % :servers  -- now and then another server
           ELSE member * 7919 % :servers  -- the member's own server
      END AS server,
      CASE WHEN fate_u < 0.07 THEN 'refunded' ELSE 'delivered' END AS state,
      CASE WHEN size_u < 0.15 THEN 2 ELSE 1 END AS units,
      CASE WHEN e % 20 = 0 THEN 'vary' WHEN e % 20 < 3 THEN 'reroll' ELSE 'command' END AS origin
    FROM pick
  )
INSERT INTO jobs (
  user_id, guild_id, channel_id, day, units, prompt, aspect_ratio, resolution, state, task_id,
  error, created_at, updated_at, application_id, interaction_token, interaction_at,
  attachment_limit, nonce, callback_token, submitted_at, delivered_via, result_url,
  reference_url, input_url, origin, parent_job_id, quota_limit, deleted_at, nsfw_checker,
  spoiler, credits
)
SELECT
  :user_base + member,
  CASE WHEN server IS NULL THEN NULL ELSE :guild_base + server END,
  CASE WHEN server IS NULL THEN :dm_channel_base + member
       ELSE :channel_base + server * 10 + c % 3 END,
  date(at, 'unixepoch'),
  units,
  CASE b % 8 WHEN 0 THEN 'a lighthouse in a storm' WHEN 1 THEN 'a fox in the snow'
    WHEN 2 THEN 'a city street at night, rain' WHEN 3 THEN 'portrait of an old sailor'
    WHEN 4 THEN 'a bowl of ramen, steam rising' WHEN 5 THEN 'mountains above the clouds'
    WHEN 6 THEN 'a robot reading in a library' ELSE 'a cat on a windowsill' END
  || CASE c % 6 WHEN 0 THEN ', oil painting' WHEN 1 THEN ', watercolour'
    WHEN 2 THEN ', 35mm photo' WHEN 3 THEN ', pixel art' WHEN 4 THEN ', ink sketch'
    ELSE ', studio lighting, 4k' END
  || ', variation ' || n,
  CASE d % 10 WHEN 0 THEN '16:9' WHEN 1 THEN '9:16' WHEN 2 THEN '4:3' WHEN 3 THEN '3:4'
    WHEN 4 THEN '3:2' WHEN 5 THEN '2:3' ELSE '1:1' END,
  CASE units WHEN 2 THEN '2K' ELSE '1K' END,
  state,
  CASE WHEN state = 'refunded' AND e % 3 = 0 THEN NULL ELSE 'task' || b || '-' || c END,
  CASE WHEN state = 'delivered' THEN NULL
       WHEN e % 3 = 0 THEN 'kie.ai refused the prompt'
       WHEN e % 3 = 1 THEN 'kie.ai''s safety filter blocked this image'
       ELSE 'the image was not ready in time' END,
  at,
  at + 15 + 30 * where_u,
  :application_id,
  NULL,  -- a finished job forgets its interaction token
  at,
  26214400,
  'n' || c || d,
  'cb' || d || '-' || e || '-' || b,
  CASE WHEN state = 'refunded' AND e % 3 = 0 THEN NULL ELSE at + 0.5 END,
  CASE WHEN state = 'refunded' THEN NULL WHEN d % 20 = 0 THEN 'channel' ELSE 'reply' END,
  CASE WHEN state = 'refunded' THEN NULL
       ELSE 'https://discord.com/channels/'
         || CASE WHEN server IS NULL THEN '@me/' || (:dm_channel_base + member)
                 ELSE (:guild_base + server) || '/' || (:channel_base + server * 10 + c % 3) END
         || '/' || (:message_base + n) END,
  CASE WHEN origin = 'vary' THEN 'https://cdn.example/attachments/' || n || '.png' END,
  CASE WHEN origin = 'vary' THEN 'https://kieai.example/uploads/' || n || '.png' END,
  origin,
  CASE WHEN origin = 'command' OR n < 50 THEN NULL ELSE n - e % 50 END,
  10,
  CASE WHEN state = 'delivered' AND d % 50 = 0 THEN at + 3600 END,
  1,
  0,
  CASE WHEN state = 'refunded' OR d % 100 = 0 THEN NULL WHEN units = 2 THEN 24.0 ELSE 14.0 END
FROM placed
"""

# An admin's grant (now and then a reset) for one job in 200, in servers only.
_ADJUSTMENTS_SQL = """
INSERT INTO quota_adjustments (guild_id, user_id, day, kind, units, actor_id, at)
SELECT guild_id, user_id, day,
       CASE WHEN id % 1000 = 0 THEN 'reset' ELSE 'grant' END,
       CASE WHEN id % 1000 = 0 THEN 0 ELSE 1 + id % 5 END,
       :admin, created_at - 60
FROM jobs WHERE id % 200 = 0 AND guild_id IS NOT NULL
"""

# A refused prompt for one job in 50 (an admin's change for one in 500), in servers only.
_MODERATION_SQL = """
INSERT INTO moderation_log (guild_id, user_id, actor_id, kind, detail, at)
SELECT guild_id, user_id,
       CASE WHEN id % 500 = 7 THEN :admin END,
       CASE WHEN id % 500 = 7 THEN 'daily_quota'
            WHEN id % 3 = 0 THEN 'refused_banned'
            ELSE 'refused_blocked_term' END,
       CASE WHEN id % 500 = 7 THEN '10' ELSE 'gore' END,
       created_at + 1
FROM jobs WHERE id % 50 = 7 AND guild_id IS NOT NULL
"""

# Refusals counted per day, server (0: DMs) and reason, for /owner servers: one job in ten
# stands for a member refused that day.
_REFUSALS_SQL = """
INSERT INTO refusal_counts (day, guild_key, reason, count)
SELECT day, COALESCE(guild_id, 0),
       CASE id / 10 % 4 WHEN 0 THEN 'quota' WHEN 1 THEN 'blocked_term'
            WHEN 2 THEN 'budget' ELSE 'wrong_channel' END,
       COUNT(*)
FROM jobs WHERE id % 10 = 3 GROUP BY 1, 2, 3
"""


_EXPIRED_SQL = """
UPDATE jobs SET prompt = '', reference_url = NULL, input_url = NULL,
    more_reference_urls = NULL, more_input_urls = NULL, result_url = NULL, image_url = NULL,
    task_id = NULL, error = NULL, forgotten_at = :now
WHERE day < :cutoff AND state IN ('delivered', 'refunded')
"""


def build_history(
    path: Path,
    jobs: int = 1_000_000,
    *,
    members: int = 20_000,
    servers: int = 200,
    days: int = 365,
    seed: int = 1,
    history_days: int = Settings.history_days,
) -> None:
    """Create `path` with the bot's schema and `jobs` finished jobs over the last `days` days
    (ending now), from `members` members in `servers` servers and in direct messages. Jobs
    older than `history_days` (the shipped HISTORY_DAYS) are blanked as the bot would have done;
    0 keeps them whole.

    The file must not exist yet. Runs its own event loop for the bot's storage: call it from
    synchronous code (or a thread).
    """
    if path.exists():
        raise FileExistsError(f"{path} exists; build_history makes a new database")
    asyncio.run(_start_storage(path))  # the schema, by the real migrations
    span = days * 86_400
    params = {
        "jobs": jobs,
        "members": members,
        "servers": servers,
        "seed": seed,
        "start": time.time() - span,
        "span": span,
        "user_base": USER_BASE,
        "guild_base": GUILD_BASE,
        "channel_base": CHANNEL_BASE,
        "dm_channel_base": DM_CHANNEL_BASE,
        "message_base": MESSAGE_BASE,
        "application_id": APPLICATION_ID,
    }
    started = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # A rollback journal rather than WAL while loading, and no fsync: a build that fails
        # halfway is thrown away. The bot's next start puts WAL back.
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")  # 256 MB for the index builds
        db.execute("PRAGMA threads=2")  # sort for each index build on two cores
        placeholders = ", ".join("?" * len(_FILLED))
        indexes = db.execute(
            f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            f" AND tbl_name IN ({placeholders})",
            _FILLED,
        ).fetchall()
        db.execute("BEGIN")
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        if jobs > 0:
            db.execute(_JOBS_SQL, params)
        if history_days:
            # What a bot running with HISTORY_DAYS has done by now: older finished jobs kept
            # their units and outcome, their words and links were blanked.
            cutoff = time.strftime("%Y-%m-%d", time.gmtime(time.time() - history_days * 86_400))
            db.execute(_EXPIRED_SQL, {"cutoff": cutoff, "now": time.time()})
        db.execute(_ADJUSTMENTS_SQL, {"admin": ADMIN_ID})
        db.execute(_MODERATION_SQL, {"admin": ADMIN_ID})
        db.execute(_REFUSALS_SQL)
        for _, sql in indexes:  # exactly as the migrations created them
            db.execute(sql)
        db.execute("COMMIT")
    finally:
        db.close()
    log.info("%d jobs written in %.1f s", jobs, time.perf_counter() - started)
    asyncio.run(_start_storage(path))  # the statistics a running bot keeps


async def _start_storage(path: Path) -> None:
    storage = await open_storage(path)
    await storage.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.history_db", description="Build a database with a year of history."
    )
    parser.add_argument("path", type=Path, help="the database file to create")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="finished jobs (1,000,000)")
    parser.add_argument("--members", type=int, default=20_000, help="members (20,000)")
    parser.add_argument("--servers", type=int, default=200, help="servers (200)")
    parser.add_argument("--days", type=int, default=365, help="days of history (365)")
    parser.add_argument("--seed", type=int, default=1, help="the same seed builds the same jobs")
    args = parser.parse_args(argv)
    if args.path.exists():
        parser.error(f"{args.path} exists; give a new file")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    build_history(
        args.path,
        args.jobs,
        members=args.members,
        servers=args.servers,
        days=args.days,
        seed=args.seed,
    )
    log.info("built %s in %.1f s", args.path, time.perf_counter() - started)


if __name__ == "__main__":
    main()
