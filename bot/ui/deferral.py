"""The "thinking…" answer to an image request, sent as one plain POST.

Discord gives an interaction 3 s for its first answer, and in a burst thousands wait for theirs
on one event loop. discord.py's `InteractionResponse.defer` goes through its general webhook
path (a lock per token, a query string, the callback's whole resource asked for and parsed):
about 0.8 ms of CPU a command in a 3,000-command burst, where this plain POST of the same body
costs about 0.3 ms (bench/README.md). What follows the deferral (edits, followups, the images)
stays discord.py's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

DEFERRED_CHANNEL_MESSAGE = 5  # Discord's callback type: "thinking…", edited later
EPHEMERAL = 64  # message flag: shown to the member alone
# Discord's own deadline is 3 s from the command; past it the token answers 10062 anyway.
GIVE_UP_AFTER = 3.0
RETRY_PAUSE = 0.25  # before retrying a 5xx or a connection reset, while time is left
ALREADY_ACKNOWLEDGED = 40060  # Discord's code: a retry after an answer lost on its way back
ERROR_BODY_BYTES = 64 * 1024  # of an error answer, read for its message; never more
CONNECTIONS = 64  # kept open to Discord for deferrals: a burst reuses them


class Deferrals:
    """Sends deferrals for one bot, on a session of its own (opened by `start`, closed by
    `close`, both the bot's). Failures raise discord.py's own exceptions (`NotFound`,
    `Forbidden`, `DiscordServerError`, `HTTPException`), so callers handle them as before."""

    def __init__(
        self,
        api_base: Callable[[], str],
        count: Callable[[str, str], None],
    ) -> None:
        self._api_base = api_base  # read per call: discord.py's Route.BASE (a fake, in tests)
        self._count = count  # (method, status) for /metrics, as the REST trace counts
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=CONNECTIONS),
                # JSON in, nothing read back on success: no cookies, no redirects to follow.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def defer(self, interaction: discord.Interaction[ImagineBot], *, ephemeral: bool) -> None:
        """Answer "thinking…" (shown to the member alone when `ephemeral`) and mark the
        interaction answered, as `interaction.response.defer(thinking=True)` would."""
        if self._session is None:
            raise RuntimeError("Deferrals.start was not called")
        body: dict[str, Any] = {"type": DEFERRED_CHANNEL_MESSAGE}
        if ephemeral:
            body["data"] = {"flags": EPHEMERAL}
        url = f"{self._api_base()}/interactions/{interaction.id}/{interaction.token}/callback"
        deadline = time.monotonic() + GIVE_UP_AFTER
        retried = False
        while True:
            try:
                retry_in = await self._post(self._session, url, body, deadline, retried)
            except (aiohttp.ClientConnectionError, TimeoutError):
                self._count("POST", "error")
                if time.monotonic() + RETRY_PAUSE >= deadline:
                    raise
                retry_in = RETRY_PAUSE
            if retry_in is None:
                break
            retried = True
            await asyncio.sleep(retry_in)
        # discord.py's own record that the first answer went out: `is_done()`, followups and
        # edits of @original behave exactly as after its `defer` (discord.py is pinned).
        deferred = discord.InteractionResponseType.deferred_channel_message
        interaction.response._response_type = deferred

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: dict[str, Any],
        deadline: float,
        retried: bool,
    ) -> float | None:
        """One attempt: None once answered; else seconds to wait before the next (raises
        where there is no time left for one)."""
        # Each attempt ends by the deadline, however slowly Discord answers.
        timeout = aiohttp.ClientTimeout(total=max(deadline - time.monotonic(), RETRY_PAUSE))
        async with session.post(url, json=body, timeout=timeout) as response:
            self._count("POST", str(response.status))
            if 200 <= response.status < 300:
                return None
            data = await _error_body(response)
            left = deadline - time.monotonic()
            if response.status == 429:
                retry_after = _retry_after(data)
                if retry_after is not None and retry_after < left:
                    return retry_after
                raise discord.HTTPException(response, data)
            if response.status >= 500:
                if left > RETRY_PAUSE:
                    return RETRY_PAUSE
                raise discord.DiscordServerError(response, data)
            if retried and isinstance(data, dict) and data.get("code") == ALREADY_ACKNOWLEDGED:
                return None  # the attempt whose answer was lost did land
            if response.status == 404:
                raise discord.NotFound(response, data)
            if response.status == 403:
                raise discord.Forbidden(response, data)
            raise discord.HTTPException(response, data)


async def _error_body(response: aiohttp.ClientResponse) -> dict[str, Any] | str:
    """Discord's JSON error (code and message), read to a bound; its text if not JSON."""
    raw = await response.content.read(ERROR_BODY_BYTES)
    text = raw.decode("utf-8", errors="replace")
    if response.content_type == "application/json":
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        if isinstance(parsed, dict):
            return parsed
    return text


def _retry_after(data: dict[str, Any] | str) -> float | None:
    value = data.get("retry_after") if isinstance(data, dict) else None
    return float(value) if isinstance(value, int | float) and value >= 0 else None
