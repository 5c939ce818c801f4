"""Load benchmark: N simultaneous /imagine commands against the real bot process and the fakes.

The fake Discord and fake kie.ai (tests/fakes) run in this process on loopback, with kie.ai's
documented rate limits; the bot runs as `python -m bot` in its own process, configured only by
environment variables, in `callbacks` mode (PUBLIC_BASE_URL set, kie.ai calls back) or `polling`
mode. Everything is measured from what the fakes recorded on the wire plus /proc for the bot's
CPU time and peak memory. See bench/README.md for the figures and how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import free_port
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import FakeKie, TaskScript, make_png
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    bot_environment,
    embed_of,
    embed_title,
    is_final,
)

ROOT = Path(__file__).resolve().parent.parent
MODES = ("callbacks", "polling")
FIRST_USER_ID = 1_400_000_000_000_000_000
# Paths that carry an interaction token: followups, @original edits, the callback.
_TOKEN_PATH = re.compile(r"^/(?:webhooks|interactions)/\d+/([^/]+)")
_CHANNEL_POST = re.compile(r"^/channels/\d+/messages$")
_LOG_LEVEL = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", re.MULTILINE)
# Not about the load: discord.py's notices about optional voice libraries, and its "websocket is
# 41.3s behind", which is a race between its keep-alive thread and the fake's instant heartbeat
# ACK (the ACK is handled before the thread records the send; latency = one whole interval).
_LOG_NOISE = re.compile(
    r"^.*(?:voice will NOT be supported|Can't keep up, shard ID \S+ websocket is).*\n?",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Options:
    jobs: int
    users: int
    image_kb: int
    gen_min: float
    gen_max: float
    modes: tuple[str, ...]
    runs: int
    seed: int
    timeout: float
    json_path: Path


@dataclass
class RunResult:
    """The figures of one run; None where nothing could be measured (e.g. no job delivered)."""

    mode: str
    run: int
    jobs: int
    bot_version: str  # git HEAD and a digest of bot/ and cogs/ when the bot process started
    delivered: int = 0
    failed: int = 0
    unanswered: int = 0
    wall_s: float | None = None  # first interaction sent -> last final answer
    lag_p50_ms: float | None = None
    lag_p95_ms: float | None = None
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None
    # Part of the lag: from the result existing to the bot's first recordInfo that could see it.
    noticed_p50_ms: float | None = None
    noticed_p95_ms: float | None = None
    ack_p50_ms: float | None = None
    ack_p99_ms: float | None = None
    discord_calls_mean: float | None = None
    discord_calls_max: int | None = None
    kie_create_per_job: float | None = None
    kie_query_per_job: float | None = None
    kie_query_max: int | None = None
    kie_other_per_job: float | None = None
    kie_downloads_per_job: float | None = None
    cpu_ms_per_job: float | None = None  # all the bot's CPU time, start-up included
    startup_cpu_s: float | None = None  # CPU time used before the gateway was READY
    peak_rss_mb: float | None = None
    final_rss_mb: float | None = None  # VmRSS just before stopping: what the bot kept
    # Shortest time spanned by (limit + 1) consecutive arrivals at the fake kie.ai: a run keeps
    # within the limit only if this stays above the window (10 s for createTask, 1 s for
    # recordInfo). Arrivals are stamped on the harness loop, so its lag blurs them.
    tightest_submit_s: float | None = None
    tightest_query_s: float | None = None
    harness_lag_max_ms: float | None = None  # worst stall of this process's event loop
    submit_violations: int = 0
    query_violations: int = 0
    discord_429s: int = 0
    callbacks_not_ok: int = 0
    duplicate_tasks: int = 0
    bot_warnings: int = 0
    bot_errors: int = 0
    bot_exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.delivered == self.jobs and self.submit_violations + self.query_violations == 0


# (label, RunResult field, decimals); the one table printed and documented in bench/README.md.
ROWS: tuple[tuple[str, str, int], ...] = (
    ("jobs delivered", "delivered", 0),
    ("jobs failed", "failed", 0),
    ("jobs unanswered", "unanswered", 0),
    ("wall time, first command to last answer (s)", "wall_s", 1),
    ("delivery lag p50 (ms)", "lag_p50_ms", 0),
    ("delivery lag p95 (ms)", "lag_p95_ms", 0),
    ("delivery lag p99 (ms)", "lag_p99_ms", 0),
    ("delivery lag max (ms)", "lag_max_ms", 0),
    ("of which until recordInfo saw it, p50 (ms)", "noticed_p50_ms", 0),
    ("of which until recordInfo saw it, p95 (ms)", "noticed_p95_ms", 0),
    ("acknowledgement p50 (ms)", "ack_p50_ms", 0),
    ("acknowledgement p99 (ms)", "ack_p99_ms", 0),
    ("Discord REST calls per job, mean", "discord_calls_mean", 1),
    ("Discord REST calls per job, max", "discord_calls_max", 0),
    ("kie.ai createTask per job", "kie_create_per_job", 2),
    ("kie.ai recordInfo per job, mean", "kie_query_per_job", 2),
    ("kie.ai recordInfo per job, max", "kie_query_max", 0),
    ("kie.ai other API calls per job", "kie_other_per_job", 2),
    ("kie.ai file downloads per job", "kie_downloads_per_job", 2),
    ("bot CPU per job (ms)", "cpu_ms_per_job", 1),
    ("bot CPU before READY, included above (s)", "startup_cpu_s", 2),
    ("bot peak RSS (MB)", "peak_rss_mb", 1),
    ("bot RSS at the end (MB)", "final_rss_mb", 1),
    ("tightest 21 createTask arrivals (s, limit 10)", "tightest_submit_s", 2),
    ("tightest 11 recordInfo arrivals (s, limit 1)", "tightest_query_s", 2),
    ("harness event-loop stall, max (ms)", "harness_lag_max_ms", 0),
    ("kie.ai submit-limit violations", "submit_violations", 0),
    ("kie.ai query-limit violations", "query_violations", 0),
    ("Discord 429 answers", "discord_429s", 0),
    ("kie.ai callbacks not answered 2xx", "callbacks_not_ok", 0),
    ("duplicate kie.ai tasks", "duplicate_tasks", 0),
    ("bot log WARNING / ERROR lines", "bot_warnings", 0),
    ("", "bot_errors", 0),  # printed on the row above
)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)]


def image_of(size: int, rng: random.Random) -> bytes:
    """A PNG signature and header followed by random bytes: `size` bytes in all."""
    header = make_png()[:33]  # signature (8) + IHDR chunk (25)
    return header + rng.randbytes(max(0, size - len(header)))


def bot_env(
    discord: FakeDiscord, kie: FakeKie, workdir: Path, port: int, mode: str, quota: int
) -> dict[str, str]:
    env = bot_environment(
        discord,
        kie,
        workdir / "imagine.db",
        DAILY_QUOTA=str(quota),
        # The operator's ceilings stay on (every charge checks them) but are sized to the
        # burst, like the quota: a refusal is not what this benchmark measures.
        MAX_MEMBER_DAILY=str(max(quota, 50)),
        SERVER_DAILY_CAP=str(max(quota, 500)),
        # Fair-use limits off: the benchmark measures the pipeline under kie.ai's own limits,
        # not a server's policy (with them on, jobs would wait in the bot's line by design).
        MAX_RUNNING_PER_MEMBER="0",
        MAX_RUNNING_PER_SERVER="0",
        WEBHOOK_PORT=str(port),
        LOG_LEVEL="WARNING",
    )
    if mode == "callbacks":
        env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    return env


@dataclass(frozen=True)
class ProcFigures:
    cpu_s: float  # user + system
    peak_rss_mb: float  # VmHWM
    rss_mb: float  # VmRSS


def proc_figures(pid: int) -> ProcFigures | None:
    """CPU time and memory of a live process, from /proc; None once it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": fields 3, 4, ...
    memory = dict(re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", status, re.MULTILINE))
    return ProcFigures(
        cpu_s=(int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"),  # utime, stime
        peak_rss_mb=int(memory.get("VmHWM", 0)) / 1024,
        rss_mb=int(memory.get("VmRSS", 0)) / 1024,
    )


def tightest(times: list[float], count: int) -> float | None:
    """The shortest span of `count` consecutive times (None if there are fewer)."""
    ordered = sorted(times)
    spans = [ordered[i + count - 1] - ordered[i] for i in range(len(ordered) - count + 1)]
    return min(spans, default=None)


async def watch_loop_lag(worst: list[float], tick: float = 0.05) -> None:
    """Keep the worst overshoot of a short sleep in worst[0]: how long the loop was stalled."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(tick)
        worst[0] = max(worst[0], loop.time() - before - tick)


class AnswerWatch:
    """Counts interactions with a final answer, reading only requests it has not seen yet."""

    def __init__(self, discord: FakeDiscord, interactions: dict[str, FakeInteraction]) -> None:
        self._discord = discord
        self._by_token = {i.token: i for i in interactions.values()}
        self._token_by_prompt = {prompt: i.token for prompt, i in interactions.items()}
        self._seen = 0
        self.answered: set[str] = set()
        self.last_at: float | None = None

    def scan(self) -> int:
        requests = self._discord.requests
        for rec in requests[self._seen :]:
            token = self._token_of(rec)
            if token is not None and token not in self.answered:
                self.answered.add(token)
                self.last_at = rec.at
        self._seen = len(requests)
        return len(self.answered)

    def _token_of(self, rec: RecordedRequest) -> str | None:
        if rec.status >= 300:
            return None
        match = _TOKEN_PATH.match(rec.path)
        if match and match[1] in self._by_token:
            return match[1] if is_final(rec, self._by_token[match[1]]) else None
        if (
            rec.method == "POST"
            and _CHANNEL_POST.match(rec.path)
            and embed_title(rec) in (READY_TITLE, FAILED_TITLE)
        ):
            return self._token_by_prompt.get(embed_of(rec).get("description", ""))
        return None


async def start_bot(env: dict[str, str], workdir: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as sink:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            env=env,
            cwd=workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=sink,
        )


async def stop_bot(process: asyncio.subprocess.Process) -> int | None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()
    return process.returncode


async def until_ready(discord: FakeDiscord, process: asyncio.subprocess.Process, log: Path) -> None:
    ready = asyncio.ensure_future(discord.wait_until_ready(60))
    exited = asyncio.ensure_future(process.wait())
    await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
    exited.cancel()
    if not ready.done():
        ready.cancel()
        raise RuntimeError(f"the bot exited with status {process.returncode}; see {log}")
    ready.result()


async def run_once(opts: Options, mode: str, run: int, log_path: Path) -> RunResult:
    rng = random.Random(opts.seed)  # same draws for every run and mode: comparable figures
    loop_clock = asyncio.get_running_loop().time
    # FakeTask.done_at is on the loop clock, Discord's RecordedRequest.at on time.monotonic().
    if abs(loop_clock() - time.monotonic()) > 0.01:
        raise RuntimeError("the event loop's clock is not time.monotonic(); lags would be wrong")
    image = image_of(opts.image_kb * 1024, rng)
    draws = [rng.uniform(opts.gen_min, opts.gen_max) for _ in range(opts.jobs)]
    discord = FakeDiscord()
    kie = FakeKie(credits=30.0 * opts.jobs)  # flex 1K costs 14 credits: never the bottleneck
    await discord.start()
    await kie.start()
    stall = [0.0]
    lag_watch = asyncio.create_task(watch_loop_lag(stall))
    result = RunResult(mode=mode, run=run, jobs=opts.jobs, bot_version=bot_version())
    interactions: dict[str, FakeInteraction] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="imagine-bench-") as tmp:
            workdir = Path(tmp)
            env = bot_env(discord, kie, workdir, free_port(), mode, opts.jobs)
            process = await start_bot(env, workdir, log_path)
            try:
                await until_ready(discord, process, log_path)
                at_ready = proc_figures(process.pid)
                result.startup_cpu_s = at_ready.cpu_s if at_ready else None
                kie.script_next(*(TaskScript(step_seconds=d / 2, image=image) for d in draws))
                prompts = [
                    f"benchmark picture {n} of a lighthouse at dusk" for n in range(opts.jobs)
                ]
                say(f"{mode} run {run}: bot ready; sending {opts.jobs} /imagine commands")
                started = time.monotonic()
                sent = await asyncio.gather(
                    *(
                        discord.send_interaction(
                            "imagine", {"prompt": p}, user_id=FIRST_USER_ID + n % opts.users
                        )
                        for n, p in enumerate(prompts)
                    )
                )
                interactions = dict(zip(prompts, sent, strict=True))
                watch = AnswerWatch(discord, interactions)
                await wait_for_answers(watch, opts, process, started)
                at_end = proc_figures(process.pid)
                if at_end is not None:
                    result.cpu_ms_per_job = at_end.cpu_s * 1000 / opts.jobs
                    result.peak_rss_mb, result.final_rss_mb = at_end.peak_rss_mb, at_end.rss_mb
                if watch.last_at is not None:
                    result.wall_s = watch.last_at - started
            finally:
                result.bot_exit_code = await stop_bot(process)
            measure(result, discord, kie, interactions)
    finally:
        lag_watch.cancel()
        await kie.stop()
        await discord.stop()
    result.harness_lag_max_ms = stall[0] * 1000
    levels = log_levels(log_path)
    result.bot_warnings = levels["WARNING"]
    result.bot_errors = levels["ERROR"] + levels["CRITICAL"]
    return result


async def wait_for_answers(
    watch: AnswerWatch, opts: Options, process: asyncio.subprocess.Process, started: float
) -> None:
    next_report = started + 15
    while watch.scan() < opts.jobs:
        now = time.monotonic()
        if now - started > opts.timeout or process.returncode is not None:
            say(f"stopped waiting: {len(watch.answered)}/{opts.jobs} answered")
            return
        if now >= next_report:
            say(f"  {now - started:5.0f} s: {len(watch.answered)}/{opts.jobs} answered")
            next_report += 15
        await asyncio.sleep(0.25)


def measure(
    result: RunResult,
    discord: FakeDiscord,
    kie: FakeKie,
    interactions: dict[str, FakeInteraction],
) -> None:
    """Fill `result` from what the fakes recorded (after the bot has stopped)."""
    posts: dict[str, list[RecordedRequest]] = {}
    for rec in discord.requests:
        if rec.method == "POST" and _CHANNEL_POST.match(rec.path) and rec.status < 300:
            posts.setdefault(embed_of(rec).get("description", ""), []).append(rec)
    tasks = kie.created_tasks()
    done_at = {task.input["prompt"]: task.done_at for task in tasks}
    queries: dict[str, list[float]] = {}
    for call in kie.calls:
        if call.path.endswith("/recordInfo") and call.status == 200 and call.code == 200:
            queries.setdefault(call.query.get("taskId", ""), []).append(call.at)
    noticed = [
        (min(seen) - task.done_at) * 1000
        for task in tasks
        if (seen := [at for at in queries.get(task.task_id, []) if at >= task.done_at])
    ]
    result.noticed_p50_ms, result.noticed_p95_ms = percentile(noticed, 50), percentile(noticed, 95)
    lags: list[float] = []
    acks: list[float] = []
    calls: list[int] = []
    for prompt, interaction in interactions.items():
        own = discord.calls_for(interaction)
        calls.append(len(own) + len(posts.get(prompt, [])))
        ack = discord.ack_latency(interaction)
        if ack is not None:
            acks.append(ack * 1000)
        finals = [r for r in own if r.status < 300 and is_final(r, interaction)]
        finals += [
            r for r in posts.get(prompt, []) if embed_title(r) in (READY_TITLE, FAILED_TITLE)
        ]
        if not finals:
            result.unanswered += 1
            continue
        final = min(finals, key=lambda r: r.at)
        if embed_title(final) != READY_TITLE:
            result.failed += 1
            continue
        result.delivered += 1
        if prompt in done_at:
            lags.append((final.at - done_at[prompt]) * 1000)
    result.lag_p50_ms, result.lag_p95_ms, result.lag_p99_ms, result.lag_max_ms = (
        percentile(lags, p) for p in (50, 95, 99, 100)
    )
    result.ack_p50_ms, result.ack_p99_ms = percentile(acks, 50), percentile(acks, 99)
    result.discord_calls_mean = statistics.fmean(calls) if calls else None
    result.discord_calls_max = max(calls, default=None)

    def per_job(count: int) -> float:
        return count / result.jobs

    kinds = Counter(
        "download"
        if c.path.startswith("/files/")
        else c.path.rsplit("/", 1)[-1]
        if c.path.endswith(("/createTask", "/recordInfo"))
        else "other"
        for c in kie.calls
    )
    result.kie_create_per_job = per_job(kinds["createTask"])
    result.kie_query_per_job = per_job(kinds["recordInfo"])
    result.kie_other_per_job = per_job(kinds["other"])
    result.kie_downloads_per_job = per_job(kinds["download"])
    per_task = Counter(c.query.get("taskId") for c in kie.calls if c.path.endswith("/recordInfo"))
    result.kie_query_max = max(per_task.values(), default=0)
    arrivals = {
        kind: [c.at for c in kie.calls if c.path.endswith(f"/{kind}")]
        for kind in ("createTask", "recordInfo")
    }
    result.tightest_submit_s = tightest(arrivals["createTask"], kie.submit_limit + 1)
    result.tightest_query_s = tightest(arrivals["recordInfo"], kie.query_limit + 1)
    result.submit_violations = kie.submit_violations
    result.query_violations = kie.query_violations
    result.discord_429s = discord.rate_limited_responses
    result.callbacks_not_ok = sum(1 for _, status in kie.callbacks_sent if not 200 <= status < 300)
    prompts = Counter(task.input["prompt"] for task in kie.created_tasks())
    result.duplicate_tasks = sum(count - 1 for count in prompts.values())


def log_levels(path: Path) -> Counter[str]:
    """How many WARNING, ERROR and CRITICAL lines the bot logged."""
    return Counter(_LOG_LEVEL.findall(_LOG_NOISE.sub("", path.read_text(errors="replace"))))


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cell(value: float | None, decimals: int) -> str:
    return "–" if value is None else f"{value:,.{decimals}f}"


def table(columns: list[tuple[str, dict[str, float | None]]]) -> str:
    """A Markdown table: one row per figure, one column per run (and median)."""
    lines = ["| figure | " + " | ".join(name for name, _ in columns) + " |"]
    lines.append("| --- |" + " ---: |" * len(columns))
    for label, name, decimals in ROWS:
        if name == "bot_errors":
            continue
        if name == "bot_warnings":
            cells = [f"{cell(f[name], 0)} / {cell(f['bot_errors'], 0)}" for _, f in columns]
        else:
            cells = [cell(figures[name], decimals) for _, figures in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def medians(results: list[RunResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for _, name, _ in ROWS:
        values = [getattr(r, name) for r in results if getattr(r, name) is not None]
        out[name] = statistics.median(values) if values else None
    return out


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
    for path in sorted([*ROOT.glob("bot/*.py"), *ROOT.glob("cogs/*.py")]):
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


async def run_all(opts: Options) -> list[RunResult]:
    results: list[RunResult] = []
    for mode in opts.modes:
        for run in range(1, opts.runs + 1):
            log_path = opts.json_path.with_name(f"{opts.json_path.stem}-{mode}-{run}-bot.log")
            results.append(await run_once(opts, mode, run, log_path))
    return results


def report(opts: Options, results: list[RunResult]) -> None:
    """Print the table and write the same figures, with the set-up, as JSON."""
    columns: list[tuple[str, dict[str, float | None]]] = []
    for mode in opts.modes:
        mine = [r for r in results if r.mode == mode]
        for r in mine:
            columns.append((mode if opts.runs == 1 else f"{mode} #{r.run}", dataclasses.asdict(r)))
        if opts.runs > 1:
            columns.append((f"{mode} median", medians(mine)))
    info = machine()
    print(
        f"\n{opts.jobs} jobs from {opts.users} users, {opts.image_kb} KB images, generation "
        f"{opts.gen_min:g}-{opts.gen_max:g} s, seed {opts.seed}; {info['cpus']} CPUs; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; bot (git/sources) at each run's start: "
        f"{', '.join(r.bot_version for r in results)}\n"
    )
    print(table(columns))
    figures = {
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "options": {**dataclasses.asdict(opts), "json_path": str(opts.json_path)},
        "runs": [dataclasses.asdict(r) for r in results],
        "medians": {m: medians([r for r in results if r.mode == m]) for m in opts.modes},
    }
    opts.json_path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nfigures written to {opts.json_path}")


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--jobs", type=int, default=500, help="simultaneous /imagine commands")
    parser.add_argument("--users", type=int, default=100, help="distinct members sending them")
    parser.add_argument("--image-kb", type=int, default=1024, help="size of each image")
    parser.add_argument("--gen-min", type=float, default=5.0, help="shortest generation, s")
    parser.add_argument("--gen-max", type=float, default=30.0, help="longest generation, s")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--runs", type=int, default=1, help="runs per mode (median reported)")
    parser.add_argument("--seed", type=int, default=1, help="seed for generation times")
    parser.add_argument("--json", type=Path, help="default: bench/results/<mode>-<time>.json")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="give up waiting for answers after this, s"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.users < 1 or args.runs < 1 or not 0 <= args.gen_min <= args.gen_max:
        parser.error("--jobs, --users and --runs must be positive and --gen-min <= --gen-max")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Options(
        jobs=args.jobs,
        users=args.users,
        image_kb=args.image_kb,
        gen_min=args.gen_min,
        gen_max=args.gen_max,
        modes=MODES if args.mode == "both" else (args.mode,),
        runs=args.runs,
        seed=args.seed,
        timeout=args.timeout,
        json_path=args.json or ROOT / "bench" / "results" / f"{args.mode}-{stamp}.json",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 only if every job was delivered and kie.ai's limits were never exceeded."""
    opts = parse_args(argv)
    opts.json_path.parent.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run_all(opts))
    report(opts, results)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
