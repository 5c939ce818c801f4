"""The cluster scenario: the same burst through three set-ups, side by side in one run.

- 1 process, 1 key: the baseline (SHARD_COUNT=3, the process runs every shard);
- 3 processes, 1 key: SHARD_IDS 0 / 1 / 2, one killed with SIGKILL a third of the way through;
- 3 processes, 5 keys: the same, five servers each paying with its own key (`/server kie-key`).

Each on a fresh PostgreSQL database of the benchmark's own server (tests/postgres.py, started
once per invocation), with kie.ai calling back through one round-robin address. The run itself
is `tests.cluster_run.run_cluster`, which the black-box test asserts on.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from bench.world import fakes, percentile, say
from bot.store import PostgresTarget
from bot.store.postgres import PostgresDatabase
from tests.cluster_run import ClusterPlan, ClusterReport, run_cluster
from tests.postgres import TEMPLATE, PostgresServer, find_binaries

LEASE = 3.0
TAKEOVER_BOUND = LEASE + LEASE / 3 + 1.0  # as tests/test_cluster_blackbox.py
SERVERS = 5
# (figure prefix, label, processes, own keys, kill one process)
SETUPS = (
    ("p1", "1 process, 1 key", 1, False, False),
    ("p3", "3 processes, 1 key", 3, False, True),
    ("k5", "3 processes, 5 keys", 3, True, True),
)
Figures = dict[str, float | None]


def postgres(cache: dict[str, object]) -> PostgresServer:
    """The benchmark's PostgreSQL server, started on first need, with a migrated template."""
    server = cache.get("postgres")
    if isinstance(server, PostgresServer):
        return server
    binaries = find_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (.ci/run installs it)")
    server = PostgresServer(binaries)
    server.start()
    cache["postgres"] = server
    server.create_named(TEMPLATE)
    return server


async def _migrated(server: PostgresServer) -> None:
    database = await PostgresDatabase.open(PostgresTarget(server.url(TEMPLATE)))
    await database.close()


def stop_postgres(cache: dict[str, object]) -> None:
    server = cache.pop("postgres", None)
    if isinstance(server, PostgresServer):
        server.stop()


def keep_logs(folder: Path, results: Path, stamp: str) -> None:
    """The bots' logs, beside the JSON (the run's folder is deleted after)."""
    for log in folder.glob("process-*.log"):
        (results / f"{stamp}-{log.name}").write_bytes(log.read_bytes())


async def one_setup(
    server: PostgresServer, plan: ClusterPlan, results: Path, stamp: str
) -> ClusterReport:
    name = server.create_database(TEMPLATE)
    try:
        async with fakes(credits=100.0 * plan.jobs) as world:
            with tempfile.TemporaryDirectory(prefix="imagine-bench-cluster-") as tmp:
                try:
                    return await run_cluster(
                        world.discord, world.kie, server.url(name), Path(tmp), plan
                    )
                finally:
                    keep_logs(Path(tmp), results, stamp)
    finally:
        server.drop_database(name)


def figures_of(prefix: str, report: ClusterReport, out: Figures) -> None:
    out[f"{prefix}_drain_s"] = report.drain_s
    out[f"{prefix}_limit_s"] = report.physical_limit_s
    out[f"{prefix}_drain_ratio"] = (
        None if report.drain_s is None else report.drain_s / report.physical_limit_s
    )
    out[f"{prefix}_c2i_p50_s"] = percentile(report.c2i, 50)
    out[f"{prefix}_c2i_p95_s"] = percentile(report.c2i, 95)
    out[f"{prefix}_lag_p50_s"] = percentile(report.lags, 50)
    out[f"{prefix}_lag_p95_s"] = percentile(report.lags, 95)
    out[f"{prefix}_submit_violations"] = sum(report.submit_violations.values())
    out[f"{prefix}_query_violations"] = sum(report.query_violations.values())
    out[f"{prefix}_not_once"] = report.plan.jobs - report.images.get(1, 0)
    out[f"{prefix}_quota_minus_delivered"] = report.ledger_units - report.delivered
    takeover = report.takeover
    out[f"{prefix}_takeover_max_s"] = None if takeover is None else takeover.worst
    out[f"{prefix}_takeover_jobs"] = None if takeover is None else len(takeover.after)


async def cluster(
    jobs: int,
    members: int,
    gen: tuple[float, float],
    seed: int,
    results: Path,
    stamp: str,
    cache: dict[str, object],
) -> Figures:
    server = postgres(cache)
    if not cache.get("postgres_migrated"):
        await _migrated(server)
        cache["postgres_migrated"] = True
    out: Figures = {}
    for prefix, label, processes, keys, kill in SETUPS:
        plan = ClusterPlan(
            jobs=jobs,
            members=members,
            servers=SERVERS,
            processes=processes,
            server_keys=keys,
            lease_seconds=LEASE,
            kill=kill,
            task_seconds=gen,
            seed=seed,
        )
        say(f"  cluster: {label}, {jobs} jobs from {members} members in {SERVERS} servers")
        report = await one_setup(server, plan, results, f"{stamp}-cluster-{prefix}")
        say(f"    drained in {report.drain_s} s; {report.summary()[:300]}")
        figures_of(prefix, report, out)
        await asyncio.sleep(1)  # let the ports and the database settle between set-ups
    one, three, five = (out.get(f"{p}_drain_s") for p, *_ in SETUPS)
    out["p3_vs_p1"] = None if not one or not three else three / one
    out["k5_speedup"] = None if not three or not five else three / five
    return out
