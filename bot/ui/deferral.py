"""The "thinking…" answer to an image request, sent as one plain POST.

Discord gives an interaction 3 s for its first answer, and in a burst thousands wait for theirs
on one event loop. discord.py's `InteractionResponse.defer` goes through its general webhook
path (a lock per token, a query string, the callback's whole resource asked for and parsed):
about 0.8 ms of CPU a command in a 3,000-command burst, where a plain POST of the same body
through aiohttp costs about 0.3 ms, and through `PlainPosts` (bot/ui/plainpost.py) less again
(bench/README.md). What follows the deferral (edits, followups, the images) stays discord.py's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import discord

from bot.ui.plainpost import Answer, PlainPosts

if TYPE_CHECKING:
    from bot.discord_bot import ImagineBot

DEFERRED_CHANNEL_MESSAGE = 5  # Discord's callback type: "thinking…", edited later
EPHEMERAL = 64  # message flag: shown to the member alone
# Discord's own deadline is 3 s from the command; past it the token answers 10062 anyway.
GIVE_UP_AFTER = 3.0
RETRY_PAUSE = 0.25  # before retrying a 5xx or a connection reset, while time is left
ALREADY_ACKNOWLEDGED = 40060  # Discord's code: a retry after an answer lost on its way back
ERROR_BODY_BYTES = 64 * 1024  # of an error answer, read for its message; never more
# Kept open to Discord for deferrals (opened a few at a time, as a burst needs them), and so
# how many may wait for Discord's reply at once: one process answers at most this many
# commands per round trip (at 50 ms, 5,000 a second).
CONNECTIONS = 256
PUBLIC_BODY = json.dumps({"type": DEFERRED_CHANNEL_MESSAGE}).encode()
EPHEMERAL_BODY = json.dumps(
    {"type": DEFERRED_CHANNEL_MESSAGE, "data": {"flags": EPHEMERAL}}
).encode()


class Deferrals:
    """Sends deferrals for one bot, on connections of its own (opened by `start`, closed by
    `close`, both the bot's). Failures raise discord.py's own exceptions (`NotFound`,
    `Forbidden`, `DiscordServerError`, `HTTPException`), so callers handle them as before; a
    connection that fails for good raises `OSError` or `TimeoutError`."""

    def __init__(
        self,
        api_base: Callable[[], str],
        count: Callable[[str, str], None],
        user_agent: str,
    ) -> None:
        self._api_base = api_base  # read per call: discord.py's Route.BASE (a fake, in tests)
        self._count = count  # (method, status) for /metrics, as the REST trace counts
        self._user_agent = user_agent
        self._posts: PlainPosts | None = None

    def start(self) -> None:
        if self._posts is None:
            self._posts = PlainPosts(
                user_agent=self._user_agent, connections=CONNECTIONS, body_bytes=ERROR_BODY_BYTES
            )

    async def close(self) -> None:
        if self._posts is not None:
            posts, self._posts = self._posts, None
            await posts.close()

    async def defer(
        self,
        interaction: discord.Interaction[ImagineBot],
        *,
        ephemeral: bool,
        sent: Callable[[], None] | None = None,
    ) -> None:
        """Answer "thinking…" (shown to the member alone when `ephemeral`) and mark the
        interaction answered, as `interaction.response.defer(thinking=True)` would; `sent` is
        called once the answer is written, before Discord's reply."""
        if self._posts is None:
            raise RuntimeError("Deferrals.start was not called")
        body = EPHEMERAL_BODY if ephemeral else PUBLIC_BODY
        url = f"{self._api_base()}/interactions/{interaction.id}/{interaction.token}/callback"
        deadline = time.monotonic() + GIVE_UP_AFTER
        retried = False
        while True:
            try:
                retry_in = await self._post(self._posts, url, body, deadline, retried, sent)
            except (OSError, TimeoutError):
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
        posts: PlainPosts,
        url: str,
        body: bytes,
        deadline: float,
        retried: bool,
        sent: Callable[[], None] | None,
    ) -> float | None:
        """One attempt: None once answered; else seconds to wait before the next (raises
        where there is no time left for one)."""
        # Each attempt ends by the deadline, however slowly Discord answers.
        within = max(deadline - time.monotonic(), RETRY_PAUSE)
        answer = await posts.post(url, body, within=within, sent=sent)
        self._count("POST", str(answer.status))
        if 200 <= answer.status < 300:
            return None
        data = _error_body(answer)
        left = deadline - time.monotonic()
        # discord.py's exceptions read a response's `status` and `reason`, which Answer has.
        response = cast(aiohttp.ClientResponse, answer)
        if answer.status == 429:
            retry_after = _retry_after(data)
            if retry_after is not None and retry_after < left:
                return retry_after
            raise discord.HTTPException(response, data)
        if answer.status >= 500:
            if left > RETRY_PAUSE:
                return RETRY_PAUSE
            raise discord.DiscordServerError(response, data)
        if retried and isinstance(data, dict) and data.get("code") == ALREADY_ACKNOWLEDGED:
            return None  # the attempt whose answer was lost did land
        if answer.status == 404:
            raise discord.NotFound(response, data)
        if answer.status == 403:
            raise discord.Forbidden(response, data)
        raise discord.HTTPException(response, data)


def _error_body(answer: Answer) -> dict[str, Any] | str:
    """Discord's JSON error (code and message); its text if not JSON (read to a bound by
    `PlainPosts`)."""
    text = answer.body.decode("utf-8", errors="replace")
    if answer.content_type == "application/json":
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
