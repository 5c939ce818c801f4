"""The one dispatcher of every reply's progress edits (`bot.ui.progress_edits`): real asyncio,
edits that stand for replies and count what they were asked to send."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bot.generation import Unanswered
from bot.ui.progress_edits import ProgressEdits
from tests.helpers import eventually


@dataclass(eq=False)
class Edit:
    """A reply with progress to show; `gate` holds its edit on the wire until set."""

    name: str
    sent: list[str]
    on_wire: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def send_progress(self) -> None:
        self.on_wire.append(self.name)
        try:
            if self.gate is not None:
                await self.gate.wait()
            self.sent.append(self.name)
        finally:
            self.on_wire.remove(self.name)


async def test_a_wave_of_edits_goes_out_a_few_at_a_time() -> None:
    edits = ProgressEdits(at_once=3)
    gate = asyncio.Event()
    sent: list[str] = []
    on_wire: list[str] = []
    most = 0
    for n in range(20):
        edits.schedule(Edit(f"reply {n}", sent, on_wire, gate), 0)

    async def watch() -> None:
        nonlocal most
        while len(sent) < 20:
            most = max(most, len(on_wire))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await eventually(lambda: len(on_wire) == 3)
    assert len(edits) == 17, "the others wait as entries, not on the wire"
    gate.set()
    await asyncio.wait_for(watcher, 5)
    assert most == 3
    assert sent == [f"reply {n}" for n in range(20)], "in the order they fell due"
    await edits.close()


async def test_an_edit_goes_when_it_is_due_and_an_earlier_one_goes_first() -> None:
    edits = ProgressEdits()
    sent: list[str] = []
    started = time.monotonic()
    edits.schedule(Edit("later", sent), 1.0)
    await asyncio.sleep(0.05)  # the dispatcher sleeps until "later" is due
    edits.schedule(Edit("sooner", sent), 0.05)  # due before the one the dispatcher sleeps for
    await eventually(lambda: sent == ["sooner"])  # alone: sent without waiting for "later"
    assert time.monotonic() - started >= 0.1
    await eventually(lambda: sent == ["sooner", "later"])
    assert time.monotonic() - started >= 1.0
    await edits.close()


async def test_edits_wait_for_unanswered_commands_but_not_forever() -> None:
    unanswered = Unanswered()  # the bot's own count of commands owed their first answer
    edits = ProgressEdits(until_answered=unanswered.quiet, patience=0.5)
    sent: list[str] = []
    unanswered.arrived()
    edits.schedule(Edit("position 3", sent), 0)
    await asyncio.sleep(0.2)
    assert sent == [], "a command still owed its first answer goes first"
    unanswered.answered()
    await eventually(lambda: sent == ["position 3"], timeout=2)

    unanswered.arrived()  # a steady stream of commands: the edit goes after its patience anyway
    started = time.monotonic()
    edits.schedule(Edit("position 1", sent), 0)
    await eventually(lambda: sent[-1] == "position 1", timeout=5)
    assert time.monotonic() - started >= 0.4, "it waited its patience out first"
    await edits.close()


async def test_after_close_nothing_more_is_sent() -> None:
    edits = ProgressEdits(at_once=1)
    gate = asyncio.Event()
    sent: list[str] = []
    held = Edit("on the wire", sent, gate=gate)
    edits.schedule(held, 0)
    edits.schedule(Edit("waiting", sent), 0)
    await eventually(lambda: held.on_wire == ["on the wire"])
    await edits.close()
    edits.schedule(Edit("after", sent), 0)
    gate.set()
    await asyncio.sleep(0.1)
    assert sent == [] and held.on_wire == [], "the edit on the wire was cut, no other sent"
