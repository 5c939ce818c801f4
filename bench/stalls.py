"""How long the bot's own CPU work stalls the event loop: `python -m bench.stalls`.

Runs each heavy code path of the bot while a sampler task sleeps 5 ms at a time on the same loop
and records by how much each sleep overshoots. Reports the worst overshoot per path (the longest
the loop could not run anything else). Not part of the test suite: the figures depend on the
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import resource
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta

from aiohttp import web
from PIL import Image

from bot.__main__ import build_kie_client, http_session
from bot.blocklist import BlockRule, find_blocked
from bot.charts import DayStats, render_daily_chart
from bot.images import REENCODES_AT_ONCE, Reencoder, fit_image
from bot.kie.client import MAX_API_BYTES
from bot.kie.parsing import load_json
from bot.moderation import blocked_in
from bot.settings import Settings
from bot.ui.reply import DEFAULT_UPLOAD_LIMIT

TICK = 0.005


class Sampler:
    """Sleeps `TICK` over and over and keeps the worst overshoot."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            self.worst = max(self.worst, time.perf_counter() - start - TICK)


def noisy_png(side: int) -> bytes:
    """A PNG of random pixels: it does not compress, so it is about 3 bytes a pixel."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def big_answer(shape: str) -> bytes:
    """A kie.ai recordInfo answer padded to just under MAX_API_BYTES."""
    data: dict[str, object] = {"taskId": "t" * 32, "state": "success"}
    if shape == "string":
        data["resultJson"] = json.dumps({"resultUrls": ["https://x.test/" + "a" * 900_000]})
    elif shape == "numbers":
        data["param"] = [random.random() for _ in range(50_000)]
    elif shape == "objects":
        data["param"] = [{"k": i, "v": "x"} for i in range(50_000)]
    else:  # the slowest kind of JSON to parse
        data["param"] = [[] for _ in range(350_000)]
    raw = json.dumps({"code": 200, "msg": "success", "data": data}, separators=(",", ":")).encode()
    while len(raw) > MAX_API_BYTES:
        trimmed = data.get("param")
        assert isinstance(trimmed, list)
        del trimmed[-1000:]
        raw = json.dumps(
            {"code": 200, "msg": "success", "data": data}, separators=(",", ":")
        ).encode()
    return raw


async def measure(name: str, work: Callable[[], Awaitable[object]], repeat: int) -> None:
    worst = 0.0
    took = 0.0
    for _ in range(repeat):
        async with Sampler() as sampler:
            started = time.perf_counter()
            await work()
            took = max(took, time.perf_counter() - started)
            await asyncio.sleep(2 * TICK)  # let the sampler see the end of the work
        worst = max(worst, sampler.worst)
    print(f"{name:<52} worst stall {worst * 1000:7.1f} ms   (work took up to {took * 1000:.0f} ms)")


async def measure_download(png: bytes, repeat: int) -> None:
    """KieClient.download of the big image from a local server, against the old way of
    collecting it (a growing bytearray, copied to bytes at the end)."""

    async def serve(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for start in range(0, len(png), 2**20):
            await response.write(png[start : start + 2**20])
        return response

    app = web.Application()
    app.router.add_get("/big.png", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings = Settings(discord_token="t", kie_api_key="k", kie_api_base=f"http://127.0.0.1:{port}")
    try:
        async with http_session(settings) as session:
            kie = build_kie_client(session, settings)
            url = f"http://127.0.0.1:{port}/big.png"

            async def download() -> object:
                return await kie.download(url, max_bytes=2**30, time_limit=60)

            async def collect_as_before() -> object:
                async with session.get(url) as response:
                    data = bytearray()
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        data.extend(chunk)
                return bytes(data)

            mb = len(png) / 2**20
            await measure(
                f"download {mb:.0f} MB: bytearray + bytes() (before)", collect_as_before, repeat
            )
            await measure(f"download {mb:.0f} MB: KieClient.download (now)", download, repeat)
    finally:
        await runner.cleanup()


async def main(side: int, repeat: int) -> None:
    png = noisy_png(side)
    print(f"image: {side}x{side} noisy PNG, {len(png) / 2**20:.1f} MB; limit 10 MiB")
    semaphore = asyncio.Semaphore(REENCODES_AT_ONCE)

    async def in_a_thread() -> object:  # the delivery path before: a thread under a semaphore
        async with semaphore:
            return await asyncio.to_thread(fit_image, png, "image/png", DEFAULT_UPLOAD_LIMIT)

    async def idle() -> object:  # the floor: what the machine's other load costs the loop
        return await asyncio.sleep(2)

    await measure("nothing (the loop idles for 2 s)", idle, 1)
    reencoder = Reencoder()
    try:

        async def in_a_process() -> object:  # the delivery path now
            return await reencoder.fit(png, "image/png", DEFAULT_UPLOAD_LIMIT, "imagine")

        async def two_at_once() -> object:
            return await asyncio.gather(in_a_process(), in_a_process())

        await measure("fit_image, Reencoder, first use (starts the worker)", in_a_process, 1)
        await measure("fit_image, Reencoder worker process (now)", in_a_process, repeat)
        await measure("fit_image, two at once through the Reencoder", two_at_once, 1)
        await measure("fit_image, thread (before)", in_a_thread, repeat)
        worker = await reencoder.call(resource.getrusage, resource.RUSAGE_SELF)
        print(f"worker process peak RSS {worker.ru_maxrss / 1024:.0f} MB")
    finally:
        await reencoder.close()

    for shape in ("string", "numbers", "objects", "empty lists"):
        raw = big_answer(shape)

        async def before(raw: bytes = raw) -> object:  # what KieClient._read_envelope did
            return json.loads(raw)

        async def now(raw: bytes = raw) -> object:  # what it does now
            try:
                return load_json(raw)
            except ValueError:
                return None  # refused unparsed: too many values

        label = f"JSON answer, {len(raw) / 2**20:.2f} MB of {shape}"
        await measure(f"{label}: json.loads (before)", before, repeat)
        await measure(f"{label}: load_json (now)", now, repeat)

    await measure_download(png, repeat)

    rules = [BlockRule(f"term{i}") for i in range(200)] + [BlockRule("white power")]
    prompt = " ".join(
        random.choice(["a", "cat", "b a d", "go re", "k1ll", "class"]) for _ in range(1400)
    )
    prompt = prompt[:5000]

    async def blocklist_before() -> object:
        return find_blocked(prompt, rules)

    async def blocklist_now() -> object:
        return await blocked_in(prompt, tuple(rules))

    await measure("blocklist, 5000-char prompt: on the loop (before)", blocklist_before, repeat)
    await measure("blocklist, 5000-char prompt: blocked_in (now)", blocklist_now, repeat)

    days = [DayStats(date(2026, 1, 1) + timedelta(days=i), 1000 + i, i, 2000) for i in range(30)]

    async def chart() -> object:
        return await asyncio.to_thread(render_daily_chart, days)

    await measure("render_daily_chart, 30 days (thread, as the cog does)", chart, repeat)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=4096, help="image side in pixels")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main(options.side, options.repeat))
