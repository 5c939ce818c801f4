"""Load benchmark: the real bot process, with its shipped defaults, against the fakes.

Runs every scenario (`bench.scenarios.SCENARIOS`) `--runs` times, interleaved (run 1 of each,
then run 2 of each…), and prints one table per scenario: each figure, its target, the median
of the runs, every run's value, and whether the median meets the target. The same figures,
with the options and the machine, go to a JSON file in bench/results/. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.scenarios import SCENARIOS, Figures, Options, Scenario, cleanup, shipped
from bench.world import say

ROOT = Path(__file__).resolve().parent.parent
NAMES = tuple(s.name for s in SCENARIOS)


def bot_version() -> str:
    """Git HEAD (+dirty) and a digest of bot/ and cogs/: the bot may change between commits."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "bot", "cogs"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        head, dirty = "unknown", ""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("bot/**/*.py"), *ROOT.glob("cogs/*.py")]):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{head}{'+dirty' if dirty else ''}/{digest.hexdigest()[:8]}"


def machine() -> dict[str, object]:
    meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE)
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(int(total.group(1)) / 2**20, 1) if total else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclasses.dataclass
class Run:
    scenario: str
    run: int
    bot_version: str
    seconds: float
    figures: Figures
    error: str | None = None


async def run_all(opts: Options, scenarios: Sequence[Scenario], runs: int) -> list[Run]:
    cache: dict[str, object] = {}  # the history database, built once
    results: list[Run] = []
    try:
        for number in range(1, runs + 1):
            for scenario in scenarios:
                say(f"{scenario.name} #{number}: {scenario.describe(opts)}")
                version, started = bot_version(), time.monotonic()
                try:
                    figures, error = await scenario.run(opts, number, cache), None
                except Exception as exc:  # one broken run must not lose the others' figures
                    traceback.print_exc()
                    figures, error = {}, f"{type(exc).__name__}: {exc}"
                seconds = time.monotonic() - started
                say(f"  done in {seconds:.0f} s" + (f" — FAILED: {error}" if error else ""))
                results.append(Run(scenario.name, number, version, seconds, figures, error))
    finally:
        cleanup(cache)
    if "history_build_s" in cache:
        say(f"history database built in {cache['history_build_s']:.1f} s")
    return results


def cell(value: float | None, decimals: int) -> str:
    return "–" if value is None else f"{value:,.{decimals}f}"


def median_of(runs: Sequence[Run], key: str) -> float | None:
    values = [v for r in runs if (v := r.figures.get(key)) is not None]
    return statistics.median(values) if values else None


def table(scenario: Scenario, runs: Sequence[Run]) -> tuple[str, dict[str, float | None], bool]:
    """A Markdown table (figure, target, median, runs, met?), the medians, and whether every
    target was met."""
    lines = ["| figure | target | median | runs | met? |", "| --- | --- | ---: | ---: | --- |"]
    medians: dict[str, float | None] = {}
    all_met = bool(runs) and not any(r.error for r in runs)
    for figure in scenario.figures:
        median = medians[figure.key] = median_of(runs, figure.key)
        each = ", ".join(cell(r.figures.get(figure.key), figure.decimals) for r in runs)
        verdict = figure.verdict(median)
        all_met = all_met and verdict in ("", "yes")
        lines.append(
            f"| {figure.label} | {figure.target or '–'} | {cell(median, figure.decimals)} "
            f"| {each} | {verdict} |"
        )
    return "\n".join(lines), medians, all_met


def report(opts: Options, scenarios: Sequence[Scenario], runs: int, results: list[Run]) -> bool:
    """Print the tables and write the same figures, with the set-up, as JSON; True if every
    target was met."""
    info = machine()
    command = " ".join(["python -m bench.run", *sys.argv[1:]])
    print(
        f"\n`{command}`: {runs} run(s) of each scenario, medians; {opts.image_kb} KB images, "
        f"generation {opts.gen_min:g}–{opts.gen_max:g} s, seed {opts.seed}; "
        + (f"Discord replies after {opts.discord_rtt * 1000:g} ms; " if opts.discord_rtt else "")
        + f"{info['cpus']} CPUs, "
        f"Python {info['python']}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; bot (git/sources): "
        f"{', '.join(sorted({r.bot_version for r in results}))}"
    )
    everything_met = True
    summary: dict[str, object] = {}
    for scenario in scenarios:
        mine = [r for r in results if r.scenario == scenario.name]
        text, medians, met = table(scenario, mine)
        everything_met = everything_met and met
        print(f"\n### {scenario.name}: {scenario.describe(opts)}\n")
        print(text)
        for r in mine:
            if r.error:
                print(f"\nrun {r.run} failed: {r.error}")
        summary[scenario.name] = {
            "describe": scenario.describe(opts),
            "medians": medians,
            "targets": {f.key: f.target for f in scenario.figures if f.target},
            "met": met,
        }
    print(f"\nevery target met: {'yes' if everything_met else 'no'}")
    path = opts.results / f"{opts.stamp}.json"
    figures = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "options": {**dataclasses.asdict(opts), "results": str(opts.results)},
        "scenarios": summary,
        "runs": [dataclasses.asdict(r) for r in results],
    }
    path.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    print(f"figures written to {path}")
    return everything_met


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, list[Scenario], int]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    add = parser.add_argument
    add("--runs", type=int, default=3, help="runs of each scenario (median reported)")
    add("--scenario", action="append", choices=NAMES, help=f"only these (default: all: {NAMES})")
    add("--jobs", type=int, default=500, help="fair-use and history: /imagine commands")
    add("--users", type=int, default=100, help="fair-use and history: members sending them")
    add("--burst", type=int, default=3000, help="burst: /imagine commands")
    add("--burst-users", type=int, default=1000, help="burst: members sending them")
    add("--burst-servers", type=int, default=10, help="burst: servers they are in")
    add("--history-jobs", type=int, default=1_000_000, help="history: finished jobs in the DB")
    add("--line-members", type=int, default=60, help="line: members, one request each")
    add("--line-limit", type=int, default=5, help="line: its MAX_RUNNING_PER_SERVER")
    add("--crowd", type=int, default=200, help="crowd: members, one request each")
    add("--cluster-jobs", type=int, default=300, help="cluster: /imagine commands per set-up")
    add("--cluster-members", type=int, default=100, help="cluster: members sending them")
    add("--probes", type=int, default=50, help="/history and /quota calls timed per member")
    add("--image-kb", type=int, default=1024, help="size of each image")
    add(
        "--discord-rtt",
        type=float,
        default=0.0,
        help="seconds the fake Discord takes to reply to an interaction callback (0: loopback)",
    )
    add("--gen-min", type=float, default=2.0, help="shortest generation on kie.ai, s")
    add("--gen-max", type=float, default=6.0, help="longest generation on kie.ai, s")
    add(
        "--mode",
        choices=("polling", "callbacks"),
        default="polling",
        help="polling (the shipped default: no PUBLIC_BASE_URL) or callbacks",
    )
    add("--seed", type=int, default=1, help="seed for generation times and the history")
    add("--results", type=Path, default=ROOT / "bench" / "results", help="JSON and bot logs")
    args = parser.parse_args(argv)
    counts = (
        args.jobs,
        args.users,
        args.burst,
        args.burst_users,
        args.burst_servers,
        args.history_jobs,
        args.line_members,
        args.crowd,
        args.probes,
        args.runs,
        args.cluster_jobs,
        args.cluster_members,
    )
    if min(counts) < 1 or not 0 <= args.gen_min <= args.gen_max:
        parser.error("counts must be positive and --gen-min <= --gen-max")
    # Members ask within the shipped quota and caps, so a refusal is a finding, not the design.
    quota, cap = shipped("daily_quota"), shipped("server_daily_cap")
    for what, jobs, members, servers in (
        ("--jobs/--users", args.jobs, args.users, 1),
        ("--burst/--burst-users", args.burst, args.burst_users, args.burst_servers),
    ):
        if -(-jobs // members) > quota or (cap and -(-jobs // servers) > cap):
            say(
                f"warning: {what} asks more than the shipped DAILY_QUOTA ({quota}) per member "
                f"or SERVER_DAILY_CAP ({cap}) per server: expect refusals"
            )
    opts = Options(
        jobs=args.jobs,
        users=args.users,
        burst=args.burst,
        burst_users=args.burst_users,
        burst_servers=args.burst_servers,
        history_jobs=args.history_jobs,
        line_members=args.line_members,
        line_limit=args.line_limit,
        crowd=args.crowd,
        probes=args.probes,
        image_kb=args.image_kb,
        gen_min=args.gen_min,
        gen_max=args.gen_max,
        discord_rtt=args.discord_rtt,
        mode=args.mode,
        seed=args.seed,
        results=args.results,
        stamp=datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        cluster_jobs=args.cluster_jobs,
        cluster_members=args.cluster_members,
    )
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    return opts, chosen, args.runs


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 only if every run finished and every median met its target."""
    opts, scenarios, runs = parse_args(argv)
    opts.results.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run_all(opts, scenarios, runs))
    return 0 if report(opts, scenarios, runs, results) else 1


if __name__ == "__main__":
    sys.exit(main())
