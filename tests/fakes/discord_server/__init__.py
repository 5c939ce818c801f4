"""A wire-level fake of Discord for tests: REST under ``/api/v10`` plus the gateway websocket.

This module owns the fake service and nothing else: an aiohttp server on 127.0.0.1 that an
unmodified discord.py 2.7 client logs in to, connects its gateway to, receives injected
INTERACTION_CREATE events from (slash commands and button presses), and answers over REST. It
records every REST request faithfully (tests assert on what the bot sent), keeps the state Discord
would keep (interaction responses, followups, channel and DM messages with their components, guild
roles, synced commands, gateway sessions, uploaded attachments served by a small CDN), enforces
the platform rules a bot can trip over (token lifetime, double acknowledgement, callback types per
interaction type, message, component and command limits, upload limits, the small
interaction-webhook rate limit) and lets a test inject faults.

Wire formats were checked against discord.py 2.7.1 (``http.py``, ``webhook/async_.py``,
``gateway.py``, ``state.py``, ``interactions.py``); see ``/work/shared/DISCORD-NOTES.md``.

Redirect a bot to it with::

    fake = FakeDiscord()
    await fake.start()
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url)
    )

The package, by concern: ``records`` (constants and the records tests read), ``validation``
(payload checks as Discord does them), ``state`` (what Discord remembers), ``rest`` (the REST
routes, the CDN and fault injection), ``gateway`` (the websocket and injected events) and
``fake`` (``FakeDiscord``, which starts the server and is made of the three mixins).
"""

from tests.fakes.discord_server.fake import FakeDiscord
from tests.fakes.discord_server.records import (
    DEFAULT_GUILD,
    DEFAULT_OWNER_ID,
    DEFAULT_USER_ID,
    FakeInteraction,
    RecordedFile,
    RecordedRequest,
)

__all__ = [
    "DEFAULT_GUILD",
    "DEFAULT_OWNER_ID",
    "DEFAULT_USER_ID",
    "FakeDiscord",
    "FakeInteraction",
    "RecordedFile",
    "RecordedRequest",
]
