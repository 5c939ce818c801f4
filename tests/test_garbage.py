"""What a finished command leaves for the cycle collector: nothing. Thousands of commands in a
burst each left fifteen objects that only a full collection could free, and the full collection
that came while the line drained was that much longer (see `cogs.common.let_go`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import discord
import pytest

from tests.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord
from tests.helpers import READY_TITLE, embed_title, final_answer

PROMPT = "a lighthouse at dusk"


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Only reference counts free anything meanwhile: what is left is cyclic garbage."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_finished_imagine_leaves_no_interaction_behind(
    start_bot: StartBot, fake_discord: FakeDiscord, collector_off: None
) -> None:
    await start_bot()
    sent = [
        await fake_discord.send_interaction("imagine", {"prompt": PROMPT}, user_id=100 + n)
        for n in range(3)
    ]
    for interaction in sent:
        assert embed_title(await final_answer(fake_discord, interaction)) == READY_TITLE

    left = [o for o in gc.get_objects() if isinstance(o, discord.Interaction)]
    assert left == [], "each command's interaction is freed as the command returns"
