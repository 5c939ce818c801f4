"""Three bot processes on one PostgreSQL database and one kie.ai key keep, together, to the key's
limits (createTask and status queries): a burst spread over all three reaches kie.ai without a
single call over them, and every image is delivered once; a server's own key keeps a budget of
its own. (The shared window itself: tests/test_shared_ratelimit.py.) Three in-process bots,
each with its own connection pool and its own limiters, as three processes would have."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bot.settings import Settings
from bot.store import PostgresTarget
from tests.conftest import RunningBot, StartBot
from tests.fakes.discord_server import FakeDiscord, FakeInteraction
from tests.fakes.kie_server import FakeKie
from tests.helpers import READY_TITLE, embed_title, eventually, final_answer, original_edits
from tests.test_server_keys import SECRET, set_key

PROMPT = "a lighthouse in a storm, oil painting"
CREATE = "/api/v1/jobs/createTask"
QUERY = "/api/v1/jobs/recordInfo"
OTHER_GUILD = 515151
SERVER_KEY = "cluster-server-own-key-5b1d0e77"
# kie.ai's limits (20 createTask per 10 s, 10 queries per second), scaled so a burst of 60
# spans several windows in a few seconds. The fake enforces exactly these.
SUBMIT = (8, 1.0)
QUERIES = (5, 0.25)


@pytest.fixture
def settings(settings: Settings, postgres_target: PostgresTarget) -> Settings:
    return replace(settings, database_url=postgres_target.url, secret_key=SECRET)


@pytest.fixture
def fake_kie(fake_kie: FakeKie) -> FakeKie:
    fake_kie.submit_limit, fake_kie.submit_window = SUBMIT
    fake_kie.query_limit, fake_kie.query_window = QUERIES
    return fake_kie


class Cluster:
    """Bots started one after another; Discord sends each interaction to one of their gateway
    sessions, and here the test says which (the fake sends to the newest by itself)."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.bots: list[RunningBot] = []
        self._sessions: list[int] = []

    async def start(self, start_bot: StartBot) -> None:
        identified = self.fake.identify_count + 1
        self.bots.append(
            await start_bot(submit_limit=SUBMIT, query_limit=QUERIES, max_running_per_server=0)
        )
        await eventually(lambda: self.fake.identify_count >= identified, 10, what="IDENTIFY")
        self._sessions.append(len(self._sessions))

    async def imagine(self, n: int, **extra: Any) -> FakeInteraction:
        self.fake.send_events_to(self._sessions[n % len(self._sessions)])
        return await self.fake.send_interaction(
            "imagine", {"prompt": f"{PROMPT} #{n}"}, user_id=1000 + n, **extra
        )


async def delivered_once(fake: FakeDiscord, interactions: list[FakeInteraction]) -> None:
    for interaction in interactions:
        assert embed_title(await final_answer(fake, interaction, 60)) == READY_TITLE
    for interaction in interactions:
        ready = [r for r in original_edits(fake, interaction) if embed_title(r) == READY_TITLE]
        assert len(ready) == 1, "delivered exactly once"


def submitted(running: RunningBot) -> int:
    """createTask calls this process made (its own metrics)."""
    return int(running.bot.metrics.kie_requests.labels("createTask", "200")._value.get())


def most_in_any(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times))


async def test_three_processes_on_one_key_stay_within_its_limits_together(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    cluster = Cluster(fake_discord)
    for _ in range(3):
        await cluster.start(start_bot)
    interactions = [await cluster.imagine(n) for n in range(60)]
    await delivered_once(fake_discord, interactions)
    for running in cluster.bots:
        await running.idle(30)

    creates = fake_kie.calls_to(CREATE)
    assert len(creates) == 60, "each job submitted once, none refused for speed"
    assert fake_kie.submit_violations == 0
    assert fake_kie.query_violations == 0
    assert most_in_any([c.at for c in creates], SUBMIT[1]) <= SUBMIT[0]
    assert most_in_any([c.at for c in fake_kie.calls_to(QUERY)], QUERIES[1]) <= QUERIES[0]
    # Each process sent its share of the burst (without the shared window, each would have
    # sent its twenty at once).
    sent = [submitted(running) for running in cluster.bots]
    assert sum(sent) == 60 and min(sent) >= 10, sent
    assert await cluster.bots[0].storage.jobs.total_units_charged() == 60


async def test_a_servers_own_key_keeps_its_own_budget_across_processes(
    start_bot: StartBot, fake_discord: FakeDiscord, fake_kie: FakeKie
) -> None:
    fake_kie.add_account(SERVER_KEY)
    cluster = Cluster(fake_discord)
    await cluster.start(start_bot)
    await set_key(fake_discord, SERVER_KEY, guild_id=OTHER_GUILD)
    for _ in range(2):  # they read the stored key at start
        await cluster.start(start_bot)
    interactions = [
        await cluster.imagine(n, **({"guild_id": OTHER_GUILD} if n % 2 else {})) for n in range(60)
    ]
    await delivered_once(fake_discord, interactions)
    for running in cluster.bots:
        await running.idle(30)

    creates = fake_kie.calls_to(CREATE)
    assert len(creates) == 60
    own = [c.at for c in creates if c.headers["authorization"] == f"Bearer {SERVER_KEY}"]
    operators = [c.at for c in creates if c.headers["authorization"] != f"Bearer {SERVER_KEY}"]
    assert len(own) == len(operators) == 30
    assert fake_kie.violations == 0
    assert fake_kie.accounts[SERVER_KEY].submit_violations == 0
    assert most_in_any(own, SUBMIT[1]) <= SUBMIT[0]
    assert most_in_any(operators, SUBMIT[1]) <= SUBMIT[0]
    # That each key's window is its own is shown without timing in tests/test_shared_ratelimit.py
    # (how much the two keys' streams overlap here depends on the machine's load).
