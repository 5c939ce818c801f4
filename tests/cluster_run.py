"""A cluster run seen from the outside: real bot processes (`python -m bot`) on one PostgreSQL
database, splitting Discord's shards, kie.ai calling them back through one address (a
round-robin load balancer, as in front of a real cluster), a burst of /imagine from many
members over several servers, and optionally one process killed with SIGKILL while it holds
running jobs.

Everything measured comes from the fake Discord's wire record, the fake kie.ai (tasks, rate
windows and violations per key), a watch on the database's leases after the kill, and a final
read of the database once every process has stopped. `tests/test_cluster_blackbox.py` asserts
on it; `bench/cluster.py` reports it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

from bot.domain import CHARGED_STATES, OPEN_STATES
from tests.conftest import free_port
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedRequest
from tests.fakes.kie_server import FakeKie, TaskScript
from tests.helpers import (
    FAILED_TITLE,
    READY_TITLE,
    answer_text,
    bot_environment,
    embed_title,
    eventually,
    final_answer,
)

SHARDS = 3  # SHARD_COUNT of every run: 1 process runs all three, 3 processes one each
SECRET = "cluster-run-operator-secret-0123456789abcdef"
FIRST_MEMBER = 1_500_000_000_000_000_000
ADMIN = 9001
ADMIN_PERMISSIONS = "32"  # Manage Server
CREATE = "/api/v1/jobs/createTask"
_TOKEN_PATH = re.compile(r"^/(?:webhooks|interactions)/\d+/([^/]+)")
_OPEN = tuple(state.value for state in OPEN_STATES)
_CHARGED = tuple(state.value for state in CHARGED_STATES)


def guild_on(shard: int, n: int) -> int:
    """Server n's id, on `shard` of SHARDS (Discord: shard = (guild_id >> 22) % num_shards)."""
    return ((2_000_000 + n) * SHARDS + shard) << 22 | 11


@dataclass(frozen=True)
class ClusterPlan:
    jobs: int
    members: int
    servers: int
    processes: int = 3
    server_keys: bool = False  # each server its own kie.ai key (`/server kie-key set`)
    lease_seconds: float = 3.0
    kill: bool = True  # SIGKILL one process mid-run, while it holds running jobs
    task_seconds: tuple[float, float] = (6.0, 12.0)  # kie.ai's generation time, uniform
    seed: int = 14


@dataclass
class Takeover:
    """The killed process's open jobs, and when each was leased by a live process (or ended),
    in seconds after the kill; None: never within the watch."""

    pid: int
    running: int  # of its jobs, how many were at kie.ai (submitted) when it was killed
    after: dict[int, float | None] = field(default_factory=dict)

    @property
    def worst(self) -> float | None:
        values = list(self.after.values())
        return None if not values or None in values else max(v for v in values if v is not None)


@dataclass
class ClusterReport:
    plan: ClusterPlan
    started: float  # monotonic, when the burst was sent
    drain_s: float | None  # burst -> the last final answer
    c2i: list[float]  # command -> image, delivered jobs, seconds
    lags: list[float]  # kie.ai task done (its callback) -> the image on Discord, seconds
    images: Counter[int]  # images per interaction -> interactions
    failed: int
    unanswered: int
    ledger_units: int  # units charged in the database for the burst's jobs
    states: Counter[str]  # their states
    duplicate_jobs: int  # extra job rows for one prompt
    duplicate_tasks: int  # extra kie.ai tasks for one prompt
    operator_tasks: int  # tasks on the operator's key while every server had its own
    submit_violations: dict[str, int]  # per kie.ai key (by its last four characters)
    query_violations: dict[str, int]
    takeover: Takeover | None
    exit_codes: list[int | None]
    logs: list[Path]

    @property
    def delivered(self) -> int:
        return sum(n for images, n in self.images.items() if images >= 1)

    @property
    def physical_limit_s(self) -> float:
        """kie.ai takes 20 tasks per 10 s per key: N jobs over k keys need N / (2 k) s."""
        keys = self.plan.servers if self.plan.server_keys else 1
        return self.plan.jobs / (2 * keys)

    def summary(self) -> str:
        return (
            f"{self.plan}: drain {self.drain_s} s, images per interaction {dict(self.images)},"
            f" failed {self.failed}, unanswered {self.unanswered}, ledger {self.ledger_units},"
            f" states {dict(self.states)}, operator-key tasks {self.operator_tasks},"
            f" violations {self.submit_violations}"
            f" {self.query_violations}, takeover {self.takeover}, exits {self.exit_codes},"
            f" logs {[str(p) for p in self.logs]}"
        )


# --- the load balancer kie.ai calls back ---------------------------------------------------


class RoundRobin:
    """One public address in front of every process: each request goes to the next process,
    skipping those that do not answer (a killed one), as a load balancer's health checks do."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.url = ""
        self._next = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        for _ in range(len(self.backends)):
            backend = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                async with self._session.request(
                    request.method, backend + request.path_qs, data=body, headers=headers
                ) as answer:
                    return web.Response(
                        status=answer.status,
                        body=await answer.read(),
                        content_type=answer.content_type,
                    )
            except aiohttp.ClientConnectionError:
                continue
        return web.Response(status=502, text="no backend answered")


# --- the processes --------------------------------------------------------------------------


@dataclass
class Process:
    process: asyncio.subprocess.Process
    log: Path
    shards: str


async def start_process(
    env: dict[str, str], workdir: Path, log: Path
) -> asyncio.subprocess.Process:
    with log.open("wb") as sink:  # a file, not a pipe nobody reads (a full pipe stalls the bot)
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", env=env, cwd=workdir, stdout=sink, stderr=sink
        )


@contextlib.asynccontextmanager
async def cluster(
    discord: FakeDiscord, kie: FakeKie, database_url: str, workdir: Path, plan: ClusterPlan
) -> AsyncIterator[list[Process]]:
    """The plan's processes, READY on every shard with the commands synced; stopped after
    (SIGTERM, then SIGKILL after 30 s)."""
    ports = [free_port() for _ in range(plan.processes)]
    balancer = RoundRobin([f"http://127.0.0.1:{port}" for port in ports])
    await balancer.start()
    processes: list[Process] = []
    try:
        for n, port in enumerate(ports):
            shards = ",".join(str(s) for s in range(SHARDS) if s % plan.processes == n)
            home = workdir / f"process-{n}"
            home.mkdir(parents=True, exist_ok=True)
            env = bot_environment(
                discord,
                kie,
                home / "imagine.db",
                DATABASE_URL=database_url,
                LEASE_SECONDS=f"{plan.lease_seconds:g}",
                SHARD_COUNT=str(SHARDS),
                SHARD_IDS=shards,
                SECRET_KEY=SECRET,
                PUBLIC_BASE_URL=balancer.url,
                WEBHOOK_HOST="127.0.0.1",
                WEBHOOK_PORT=str(port),
            )
            log = workdir / f"process-{n}.log"
            processes.append(Process(await start_process(env, home, log), log, shards))
        ready = asyncio.ensure_future(discord.wait_until_shards_ready(SHARDS, 90))
        exited = [asyncio.ensure_future(p.process.wait()) for p in processes]
        await asyncio.wait([ready, *exited], return_when=asyncio.FIRST_COMPLETED)
        for waiter in exited:
            waiter.cancel()
        if not ready.done():
            ready.cancel()
            dead = next(p for p in processes if p.process.returncode is not None)
            tail = dead.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"a bot process exited while starting:\n{tail}")
        ready.result()
        await eventually(lambda: bool(discord.synced_commands), 60, what="the commands synced")
        yield processes
    finally:
        for p in processes:
            if p.process.returncode is None:
                p.process.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                await asyncio.wait_for(p.process.wait(), 30)
            except TimeoutError:
                p.process.kill()
                await p.process.wait()
        await balancer.stop()


# --- the run --------------------------------------------------------------------------------


@dataclass
class _Sent:
    interaction: FakeInteraction
    prompt: str
    at: float


class _Wire:
    """The fake Discord's requests indexed by interaction token, read incrementally."""

    def __init__(self, discord: FakeDiscord, sent: list[_Sent]) -> None:
        self.discord = discord
        self.by_token = {s.interaction.token: s for s in sent}
        self.images: dict[str, list[RecordedRequest]] = {t: [] for t in self.by_token}
        self.finals: dict[str, RecordedRequest] = {}
        self._seen = 0

    def scan(self) -> int:
        requests = self.discord.requests
        for rec in requests[self._seen :]:
            match = _TOKEN_PATH.match(rec.path)
            token = match[1] if match else None
            if token not in self.by_token or rec.status >= 300:
                continue
            title = embed_title(rec)
            if title == READY_TITLE:
                self.images[token].append(rec)
            final = title in (READY_TITLE, FAILED_TITLE) or (
                rec.path.endswith("/callback") and (rec.json or {}).get("type") == 4
            )
            if final and token not in self.finals:
                self.finals[token] = rec
        self._seen = len(requests)
        return len(self.finals)


async def set_server_key(discord: FakeDiscord, guild_id: int, channel_id: int, key: str) -> None:
    """`/server kie-key set` in a server, through its form, as its manager would."""
    raw = {"type": 2, "options": [{"name": "set", "type": 1, "options": []}]}
    opened = await discord.send_interaction(
        "server",
        {"kie-key": raw},
        user_id=ADMIN,
        permissions=ADMIN_PERMISSIONS,
        guild_id=guild_id,
        channel_id=channel_id,
    )
    await discord.wait_for_request(
        lambda r: r.path.endswith("/callback") and str(opened.id) in r.path, 20
    )
    submitted = await discord.submit_modal(opened, {"key": key})
    text = answer_text(await final_answer(discord, submitted, 20))
    if "…" + key[-4:] not in text:
        raise AssertionError(f"the server's key was not saved: {text}")


async def run_cluster(
    discord: FakeDiscord,
    kie: FakeKie,
    database_url: str,
    workdir: Path,
    plan: ClusterPlan,
    *,
    patience: float | None = None,
) -> ClusterReport:
    rng = random.Random(plan.seed)
    servers = []
    for n in range(plan.servers):
        servers.append(await discord.join_guild(guild_id=guild_on(n % SHARDS, n), offline=True))
    keys: list[str] = [kie.api_key]
    if plan.server_keys:
        keys = [f"server-{n}-own-kie-key-{rng.randrange(16**8):08x}" for n in range(plan.servers)]
        for key in keys:
            kie.add_account(key, credits=100.0 * plan.jobs)
    low, high = plan.task_seconds
    kie.script_next(
        *(TaskScript(step_seconds=rng.uniform(low, high) / 2) for _ in range(plan.jobs))
    )
    async with cluster(discord, kie, database_url, workdir, plan) as processes:
        if plan.server_keys:
            for server, key in zip(servers, keys, strict=True):
                await set_server_key(discord, server.id, server.channel_id, key)
        commands = []
        for n in range(plan.jobs):
            member = n % plan.members
            server = servers[member % plan.servers]
            prompt = f"cluster run picture {n} of a harbour at dawn, member {member}"
            commands.append((prompt, FIRST_MEMBER + member, server))
        started = time.monotonic()
        interactions = await asyncio.gather(
            *(
                discord.send_interaction(
                    "imagine",
                    {"prompt": prompt},
                    user_id=user,
                    guild_id=server.id,
                    channel_id=server.channel_id,
                )
                for prompt, user, server in commands
            )
        )
        sent = [
            _Sent(i, prompt, started)
            for i, (prompt, _, _) in zip(interactions, commands, strict=True)
        ]
        wire = _Wire(discord, sent)
        takeover: Takeover | None = None
        connection = await asyncpg.connect(database_url)
        try:
            if plan.kill:
                prompts = [s.prompt for s in sent]
                takeover = await _kill_one(kie, connection, processes, plan, prompts)
            limit = patience or plan.jobs / 2 * 2 + 120
            await eventually(lambda: wire.scan() >= plan.jobs, limit, what="every final answer")
            # An image can be on Discord a moment before its job is marked delivered (or, if
            # its process died right then, until the job's next owner has checked it).
            prompts = [s.prompt for s in sent]

            async def settled() -> bool:
                open_jobs = await connection.fetchval(
                    "SELECT count(*) FROM jobs WHERE prompt = ANY($1::text[])"
                    " AND state = ANY($2::text[])",
                    prompts,
                    list(_OPEN),
                )
                return int(open_jobs) == 0

            await eventually(settled, 3 * plan.lease_seconds + 20, what="no job left open")
        except TimeoutError:
            pass  # reported as unanswered, or as a job still open in the final read
        finally:
            await connection.close()
        wire.scan()
        last = max((rec.at for rec in wire.finals.values()), default=None)
    # Every process has stopped: the database is final.
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT prompt, state, units FROM jobs")
    finally:
        await connection.close()
    prompts = {s.prompt for s in sent}
    ours = [r for r in rows if r["prompt"] in prompts]
    done_at = {t.input.get("prompt"): t.done_at for t in kie.created_tasks()}
    c2i, lags = [], []
    for token, s in wire.by_token.items():
        images = wire.images[token]
        if images:
            c2i.append(images[0].at - s.at)
            if s.prompt in done_at:
                lags.append(images[0].at - done_at[s.prompt])
    task_prompts = Counter(t.input.get("prompt") for t in kie.created_tasks())
    job_prompts = Counter(r["prompt"] for r in ours)

    def tail(key: str) -> str:
        return "…" + key[-4:]

    if plan.server_keys:
        submit = {tail(k): kie.accounts[k].submit_violations for k in keys}
        query = {tail(k): kie.accounts[k].query_violations for k in keys}
    else:
        submit = {tail(kie.api_key): kie.submit_violations}
        query = {tail(kie.api_key): kie.query_violations}
    finals = [rec for rec in wire.finals.values()]
    operator = f"Bearer {kie.api_key}"
    operator_tasks = sum(
        1
        for c in kie.calls_to(CREATE)
        if plan.server_keys and c.status == 200 and c.headers.get("authorization") == operator
    )
    return ClusterReport(
        plan=plan,
        started=started,
        drain_s=None if last is None or len(finals) < plan.jobs else last - started,
        c2i=c2i,
        lags=lags,
        images=Counter(len(v) for v in wire.images.values()),
        failed=sum(1 for rec in finals if embed_title(rec) == FAILED_TITLE),
        unanswered=plan.jobs - len(finals),
        ledger_units=sum(int(r["units"]) for r in ours if r["state"] in _CHARGED),
        states=Counter(str(r["state"]) for r in ours),
        duplicate_jobs=sum(n - 1 for n in job_prompts.values()),
        duplicate_tasks=sum(n - 1 for n in task_prompts.values()),
        operator_tasks=operator_tasks,
        submit_violations=submit,
        query_violations=query,
        takeover=takeover,
        exit_codes=[p.process.returncode for p in processes],
        logs=[p.log for p in processes],
    )


async def _kill_one(
    kie: FakeKie,
    connection: asyncpg.Connection,
    processes: list[Process],
    plan: ClusterPlan,
    prompts: list[str],
) -> Takeover:
    """Mid-run (every command a job in the database, a third of the tasks sent to kie.ai),
    SIGKILL the process holding the most jobs at kie.ai, then watch its jobs' leases until
    live processes hold them all.

    Every command must be a job first: an interaction a process has received but not yet
    charged dies with it (Discord does not send it again; the member sees "did not respond"),
    which is not what the bar is about."""

    async def admitted() -> bool:
        count = await connection.fetchval(
            "SELECT count(*) FROM jobs WHERE prompt = ANY($1::text[])", prompts
        )
        return int(count) >= len(prompts)

    await eventually(admitted, 120, what="every command charged as a job")
    mid = max(1, plan.jobs // 3)

    def created() -> int:
        return len(kie.created_tasks())

    await eventually(lambda: created() >= mid, plan.jobs + 120, what="a third of the tasks")
    by_pid = {p.process.pid: p for p in processes}
    rows = await connection.fetch(
        "SELECT lease_owner, count(*) AS n FROM jobs WHERE state = 'submitted'"
        " AND lease_owner IS NOT NULL GROUP BY lease_owner ORDER BY n DESC"
    )
    owners = [(str(r["lease_owner"]), int(r["n"])) for r in rows]
    owner, running = next(((o, n) for o, n in owners if int(o.split(":")[1]) in by_pid), (None, 0))
    if owner is None:
        raise AssertionError(f"no process holds a job at kie.ai mid-run: {owners}")
    victim = by_pid[int(owner.split(":")[1])]
    victim.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await victim.process.wait()
    held = await connection.fetch(
        "SELECT id FROM jobs WHERE lease_owner = $1 AND state = ANY($2::text[])",
        owner,
        list(_OPEN),
    )
    takeover = Takeover(victim.process.pid, running, {int(r["id"]): None for r in held})
    watch_until = killed + 3 * plan.lease_seconds + 15
    while time.monotonic() < watch_until and None in takeover.after.values():
        pending = [job for job, at in takeover.after.items() if at is None]
        now_rows = await connection.fetch(
            "SELECT id, state, lease_owner FROM jobs WHERE id = ANY($1::bigint[])", pending
        )
        now = time.monotonic() - killed
        for row in now_rows:
            leased_elsewhere = row["lease_owner"] not in (None, owner)
            if leased_elsewhere or row["state"] not in _OPEN:
                takeover.after[int(row["id"])] = now
        await asyncio.sleep(0.05)
    return takeover
