"""The benchmark's world: the fakes in this process, the bot in its own, and reading both.

The fake Discord and fake kie.ai (tests/fakes) run on this process's event loop, on loopback,
with kie.ai's documented rate limits; the bot runs as `python -m bot`, configured only by
environment variables. Everything is measured from what the fakes recorded on the wire, /proc
for the bot's CPU time and memory, and the bot's database file once it has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import random
import re
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.gcwatch import GC_PAUSES_FILE
from bot.domain import CHARGED_STATES
from tests.conftest import free_port
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import FakeKie, make_png
from tests.helpers import FAILED_TITLE, READY_TITLE, bot_environment, embed_of, embed_title

# Paths that carry an interaction token: the callback, @original edits, followups.
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
CALLBACK_MESSAGE = 4  # interaction callback type: a message (the bot's private refusals)
CHARGED = tuple(state.value for state in CHARGED_STATES)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]


def image_of(size: int, rng: random.Random) -> bytes:
    """A PNG signature and header followed by random bytes: `size` bytes in all."""
    header = make_png()[:33]  # signature (8) + IHDR chunk (25)
    return header + rng.randbytes(max(0, size - len(header)))


# --- the fakes ------------------------------------------------------------------------------


@dataclass
class Fakes:
    discord: FakeDiscord
    kie: FakeKie
    stall: list[float]  # worst stall of this process's event loop so far, seconds

    @property
    def submit_rate(self) -> float:
        """kie.ai's createTask limit in tasks per second (20 per 10 s: 2)."""
        return self.kie.submit_limit / self.kie.submit_window


async def _watch_loop_lag(worst: list[float], tick: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(tick)
        worst[0] = max(worst[0], loop.time() - before - tick)


@asynccontextmanager
async def fakes(credits: float, discord_rtt: float = 0.0) -> AsyncIterator[Fakes]:
    # FakeTask times and kie.ai calls are on the loop clock, Discord's on time.monotonic().
    if abs(asyncio.get_running_loop().time() - time.monotonic()) > 0.01:
        raise RuntimeError("the event loop's clock is not time.monotonic(); times would be wrong")
    discord, kie = FakeDiscord(), FakeKie(credits=credits)
    discord.callback_reply_delay = discord_rtt
    await discord.start()
    await kie.start()
    stall = [0.0]
    watch = asyncio.create_task(_watch_loop_lag(stall))
    try:
        yield Fakes(discord, kie, stall)
    finally:
        watch.cancel()
        await kie.stop()
        await discord.stop()


# --- the bot process ------------------------------------------------------------------------


def bot_env(world: Fakes, database: Path, mode: str, **scenario: str) -> dict[str, str]:
    """The shipped defaults, plus what the fake world needs (tokens, URLs, port, database,
    a quieter log) and what the scenario itself is about (`scenario`)."""
    port = free_port()
    env = bot_environment(
        world.discord,
        world.kie,
        database,
        WEBHOOK_PORT=str(port),
        LOG_LEVEL="WARNING",
        **scenario,
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


@dataclass
class BotProcess:
    """`python -m bot` in its own process, and when it started, became READY and stopped."""

    process: asyncio.subprocess.Process
    log: Path
    started: float  # time.monotonic() just before the process was spawned
    ready_s: float | None = None  # spawn -> the fake's gateway session READY
    ready_cpu_s: float | None = None  # CPU time used by then
    exit_code: int | None = None
    shutdown_s: float | None = None  # SIGTERM -> the process has exited
    pauses_file: Path | None = None  # the garbage collector's pauses, once it has exited

    @classmethod
    async def start(cls, env: dict[str, str], workdir: Path, log: Path) -> BotProcess:
        """`python -m bot`, through `bench/gcwatch.py`, which records the garbage collector's
        pauses without changing the bot."""
        pauses = log.with_suffix(".gc.json")
        pauses.unlink(missing_ok=True)
        with log.open("wb") as sink:  # the child keeps its own copy of the descriptor
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__).with_name("gcwatch.py")),
                env={**env, GC_PAUSES_FILE: str(pauses)},
                cwd=workdir,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=sink,
            )
        return cls(process, log, started, pauses_file=pauses)

    def gc_pauses(self, since: float, until: float) -> list[float]:
        """The garbage collector's pauses (seconds) that ended between two `time.monotonic()`
        readings, read once the bot has exited."""
        if self.pauses_file is None or not self.pauses_file.exists():
            return []
        pauses = json.loads(self.pauses_file.read_text())["pauses"]
        return [seconds for ended, seconds, _ in pauses if since <= ended <= until]

    async def collect_fully(self, settle: float = 1.0) -> None:
        """Have the bot run one full garbage collection now (`bench/gcwatch.py`)."""
        self.process.send_signal(signal.SIGUSR2)
        await asyncio.sleep(settle)

    def full_collections(self) -> list[tuple[float, float]]:
        """How long each full collection asked for took, and the CPU it used (seconds), read
        once the bot exited."""
        if self.pauses_file is None or not self.pauses_file.exists():
            return []
        return [(took, cpu) for took, cpu in json.loads(self.pauses_file.read_text())["full"]]

    async def until_ready(self, discord: FakeDiscord, patience: float = 120) -> None:
        """Wait for the bot's gateway session: start-up, migrations, resume scan and command
        sync all happen before it."""
        ready = asyncio.ensure_future(discord.wait_until_ready(patience))
        exited = asyncio.ensure_future(self.process.wait())
        await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if not ready.done():
            ready.cancel()
            raise RuntimeError(f"the bot exited with status {self.process.returncode}: {self.log}")
        ready.result()
        self.ready_s = time.monotonic() - self.started
        figures = self.figures()
        self.ready_cpu_s = figures.cpu_s if figures else None

    async def until_settled(self, port: int, patience: float = 60, settle: float = 1.0) -> None:
        """Wait until discord.py itself is ready (`/healthz` says connected: every server's
        GUILD_CREATE handled, which READY on the wire does not mean), then `settle` seconds
        for the start's own work after it (the departures reconcile), so a timed probe measures
        the command, not the end of the start."""
        url = f"http://127.0.0.1:{port}/healthz"
        deadline = time.monotonic() + patience
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
                    async with session.get(url) as response:
                        if (await response.json()).get("discord_connected"):
                            await asyncio.sleep(settle)
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the bot's /healthz never said connected: {self.log}")

    def figures(self) -> ProcFigures | None:
        return proc_figures(self.process.pid)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def stop(self, patience: float = 30) -> None:
        """SIGTERM, and how long the bot takes to exit (killed after `patience` seconds)."""
        if self.process.returncode is None:
            asked = time.monotonic()
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), patience)
                self.shutdown_s = time.monotonic() - asked
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.exit_code = self.process.returncode

    def log_levels(self) -> Counter[str]:
        """How many WARNING, ERROR and CRITICAL lines the bot logged."""
        text = self.log.read_text(errors="replace")
        return Counter(_LOG_LEVEL.findall(_LOG_NOISE.sub("", text)))


# --- commands and what came back -------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    prompt: str
    user_id: int
    guild_id: int


@dataclass
class Sent:
    command: Command
    interaction: FakeInteraction
    at: float  # time.monotonic() when the harness sent it (the burst's start for a burst)


@contextlib.contextmanager
def harness_collector_off() -> Iterator[None]:
    """The benchmark's own garbage collector off (reference counts still free nearly all it
    allocates) while a burst is acknowledged: holding a burst's requests and the fakes' records,
    its full collections paused this process 100–250 ms, and this process's loop stamps each
    callback's arrival, so its pauses were counted as the bot's lateness. Discord's own
    servers do not share the bot's machine, or its pauses."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def send_all(discord: FakeDiscord, commands: Sequence[Command]) -> list[Sent]:
    """Every `/imagine` at once (the fake dispatches them one after another on one socket)."""
    at = time.monotonic()
    interactions = await asyncio.gather(
        *(
            discord.send_interaction(
                "imagine", {"prompt": c.prompt}, user_id=c.user_id, guild_id=c.guild_id
            )
            for c in commands
        )
    )
    return [Sent(c, i, at) for c, i in zip(commands, interactions, strict=True)]


@dataclass
class Outcome:
    """What one interaction got from the bot."""

    calls: int = 0  # Discord REST calls for it: callback, edits, followups, channel posts
    ack_s: float | None = None  # dispatch -> first callback
    final: RecordedRequest | None = None
    kind: str = "unanswered"  # delivered, failed, refused, unanswered, waiting


class Recorded:
    """An index of the fake Discord's requests by interaction token and by prompt, kept up to
    date by reading only the requests it has not seen yet."""

    def __init__(self, discord: FakeDiscord, sent: Iterable[Sent]) -> None:
        self._discord = discord
        self.sent = {s.interaction.token: s for s in sent}
        self._token_by_prompt = {s.command.prompt: t for t, s in self.sent.items()}
        self.by_token: dict[str, list[RecordedRequest]] = {t: [] for t in self.sent}
        self.finals: dict[str, RecordedRequest] = {}
        self._seen = 0

    def scan(self) -> int:
        """Read new requests; the number of interactions with a final answer."""
        requests = self._discord.requests
        for rec in requests[self._seen :]:
            token = self._token_of(rec)
            if token is None:
                continue
            self.by_token[token].append(rec)
            if token not in self.finals and rec.status < 300 and self._is_final(rec, token):
                self.finals[token] = rec
        self._seen = len(requests)
        return len(self.finals)

    def _token_of(self, rec: RecordedRequest) -> str | None:
        match = _TOKEN_PATH.match(rec.path)
        if match:
            return match[1] if match[1] in self.by_token else None
        if rec.method == "POST" and _CHANNEL_POST.match(rec.path):
            return self._token_by_prompt.get(embed_of(rec).get("description", ""))
        return None

    def _is_final(self, rec: RecordedRequest, token: str) -> bool:
        """The image, a failure, or a private refusal (a message callback or a followup)."""
        if embed_title(rec) in (READY_TITLE, FAILED_TITLE):
            return True
        app = self.sent[token].interaction.application_id
        if rec.method == "POST" and rec.path.endswith(f"/webhooks/{app}/{token}"):
            return True
        return rec.path.endswith("/callback") and (rec.json or {}).get("type") == CALLBACK_MESSAGE

    def outcome(self, token: str) -> Outcome:
        own = self.by_token[token]
        final = self.finals.get(token)
        ack = self._discord.ack_latency(self.sent[token].interaction)
        if final is None:
            kind = "waiting" if ack is not None else "unanswered"
        elif embed_title(final) == READY_TITLE:
            kind = "delivered"
        elif embed_title(final) == FAILED_TITLE:
            kind = "failed"
        else:
            kind = "refused"
        return Outcome(calls=len(own), ack_s=ack, final=final, kind=kind)


async def wait_until(
    check: Callable[[], bool], patience: float, what: str, bot: BotProcess, every: float = 15
) -> bool:
    """Wait (checking 4 times a second) until `check()`; False on timeout or if the bot died."""
    started = time.monotonic()
    next_report = started + every
    while not check():
        now = time.monotonic()
        if now - started > patience or not bot.running:
            say(f"    stopped waiting for {what} after {now - started:.0f} s")
            return False
        if now >= next_report:
            say(f"    {now - started:4.0f} s: waiting for {what}")
            next_report += every
        await asyncio.sleep(0.25)
    return True


def createtask_times(kie: FakeKie) -> list[float]:
    """When kie.ai accepted each task (loop clock), in order."""
    return sorted(
        c.at
        for c in kie.calls
        if c.path.endswith("/createTask") and c.status == 200 and c.code == 200
    )


# --- the database, read once the bot has stopped ----------------------------------------------


@dataclass
class LedgerRows:
    """The jobs charged for a set of prompts, read from the bot's database file."""

    rows: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # prompt -> (state, units)

    @classmethod
    def read(cls, database: Path, prompts: Iterable[str], since: float) -> LedgerRows:
        wanted = set(prompts)
        out = cls()
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            for prompt, state, units in db.execute(
                "SELECT prompt, state, units FROM jobs WHERE created_at >= ?", (since,)
            ):
                if prompt in wanted:
                    out.rows.setdefault(prompt, []).append((state, units))
        return out

    @property
    def charged_units(self) -> int:
        return sum(u for jobs in self.rows.values() for state, u in jobs if state in CHARGED)

    @property
    def duplicates(self) -> int:
        return sum(len(jobs) - 1 for jobs in self.rows.values())

    def states(self) -> Counter[str]:
        return Counter(state for jobs in self.rows.values() for state, _ in jobs)
