"""Self-test of tests/fakes/kie_server.py, through a plain aiohttp client (no bot code)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.kie_server import (
    I2I_RESULT_PNG,
    TINY_PNG,
    CreateFault,
    FakeKie,
    TaskScript,
    sniff_image,
)
from tests.helpers import eventually

CREATE = "/api/v1/jobs/createTask"
RECORD = "/api/v1/jobs/recordInfo"
URL_UPLOAD = "/api/file-url-upload"
STREAM_UPLOAD = "/api/file-stream-upload"
BASE64_UPLOAD = "/api/file-base64-upload"
POLL_INTERVAL = 0.12  # keeps every test under the 10 queries/s limit

JPEG = b"\xff\xd8\xff\xe0" + bytes(16)
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8 " + bytes(14)
GIF = b"GIF89a" + bytes(16)
HTML = b"<html><body>not an image</body></html>"


@dataclass
class Cdn:
    """A stand-in for Discord's CDN on loopback: fixed files, every request counted."""

    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    padded: dict[str, int] = field(default_factory=dict)  # path -> size of a PNG padded to it
    delays: dict[str, float] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    hit: asyncio.Event = field(default_factory=asyncio.Event)  # set by the first request
    url: str = ""

    async def serve(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        self.hit.set()
        await asyncio.sleep(self.delays.get(request.path, 0))
        if request.path in self.padded:  # built per request: big bytes held by a fixture are slow
            size = self.padded[request.path]
            return web.Response(
                body=TINY_PNG + bytes(size - len(TINY_PNG)), content_type="image/png"
            )
        if request.path not in self.files:
            return web.Response(status=404, text="Not Found")
        body, content_type = self.files[request.path]
        return web.Response(body=body, headers={"Content-Type": content_type})


@pytest.fixture
async def cdn() -> AsyncIterator[Cdn]:
    server = Cdn(
        files={
            "/a.png": (TINY_PNG, "image/png"),
            "/photo.jpg": (JPEG, "image/jpeg"),
            "/pic.webp": (WEBP, "image/webp"),
            "/anim.gif": (GIF, "image/gif"),
            "/page.html": (HTML, "text/html"),
            "/lying.png": (HTML, "image/png"),  # the type header lies; the bytes do not
            "/untyped": (TINY_PNG, "application/octet-stream"),
            "/slow.png": (TINY_PNG, "image/png"),
        },
        padded={"/10mb.png": 10_000_000, "/big.png": 10_000_001},
        delays={"/slow.png": 0.4},
    )
    app = web.Application()
    app.router.add_get("/{path:.*}", server.serve)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


def dead_url() -> str:
    """A URL on a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/gone.png"


@pytest.fixture
async def kie() -> AsyncIterator[FakeKie]:
    async with FakeKie() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def auth(fake: FakeKie) -> dict[str, str]:
    return {"Authorization": f"Bearer {fake.api_key}"}


def t2i_body(**input_fields: Any) -> dict[str, Any]:
    params = {"prompt": "a lighthouse at dusk", "aspect_ratio": "1:1", "resolution": "1K"}
    params.update(input_fields)
    return {"model": "flux-2/flex-text-to-image", "input": params}


async def create(
    http: aiohttp.ClientSession, fake: FakeKie, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        fake.base_url + CREATE, json=body, headers=auth(fake) if headers is None else headers
    ) as response:
        return response.status, await response.json(content_type=None)


async def query(
    http: aiohttp.ClientSession, fake: FakeKie, task_id: str | None
) -> tuple[int, dict[str, Any]]:
    params = {} if task_id is None else {"taskId": task_id}
    async with http.get(fake.base_url + RECORD, params=params, headers=auth(fake)) as response:
        return response.status, await response.json(content_type=None)


async def poll_until_final(
    http: aiohttp.ClientSession, fake: FakeKie, task_id: str
) -> list[dict[str, Any]]:
    seen = []
    for _ in range(50):
        _, envelope = await query(http, fake, task_id)
        assert envelope["code"] == 200, envelope
        seen.append(envelope["data"])
        if envelope["data"]["state"] in ("success", "fail"):
            return seen
        await asyncio.sleep(POLL_INTERVAL)
    raise AssertionError("task never finished")


async def test_tiny_png_is_a_valid_image() -> None:
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(io.BytesIO(TINY_PNG)) as image:
        image.load()
        assert image.format == "PNG"
        assert image.size == (4, 4)


async def test_defaults_are_the_documented_limits() -> None:
    fake = FakeKie()
    assert (fake.submit_limit, fake.submit_window) == (20, 10.0)
    assert (fake.query_limit, fake.query_window) == (10, 1.0)
    assert fake.rate_limit_http_status == 429
    assert fake.input_image_max_bytes == 10_000_000  # "at most 10 MB each"
    assert fake.upload_max_bytes == 100_000_000  # "recommended maximum file size is 100MB"
    assert fake.fetch_timeout == 30.0  # "download timeout is 30 seconds"
    assert fake.upload_ttl == 3 * 24 * 3600  # "automatically deleted after 3 days"
    assert fake.input_rejection == "create" and not fake.upload_images_only


async def test_create_poll_and_download(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    kie.script_next(TaskScript(step_seconds=0.15))
    body = t2i_body(nsfw_checker=False) | {"extraTopLevel": "ignored"}

    status, envelope = await create(http, kie, body)
    assert status == 200
    assert envelope["code"] == 200 and envelope["msg"] == "success"
    task_id = envelope["data"]["taskId"]
    assert task_id.startswith("task_flux-2_")
    assert kie.credits == 1000 - 14

    seen = await poll_until_final(http, kie, task_id)
    assert seen[0]["state"] == "waiting"
    assert [data["state"] for data in seen][-1] == "success"
    data = seen[-1]
    assert data["taskId"] == task_id and data["model"] == "flux-2/flex-text-to-image"
    assert json.loads(data["param"]) == body
    assert data["failCode"] == "" and data["failMsg"] == ""
    assert data["costTime"] == 300 and isinstance(data["costTime"], int)
    assert data["completeTime"] - data["createTime"] == 300
    assert data["updateTime"] == data["completeTime"]
    assert seen[0]["completeTime"] is None and seen[0]["resultJson"] == ""

    assert isinstance(data["resultJson"], str)  # a JSON string, not an object
    (url,) = json.loads(data["resultJson"])["resultUrls"]
    assert url == f"{kie.base_url}/files/{task_id}/0.png"
    async with http.get(url) as response:  # public file URL: no auth header
        assert response.status == 200
        assert response.content_type == "image/png"
        assert await response.read() == TINY_PNG

    async with http.get(kie.base_url + "/api/v1/chat/credit", headers=auth(kie)) as response:
        assert (await response.json())["data"] == 1000 - 14

    (create_call,) = kie.calls_to("createTask")
    assert create_call.method == "POST" and create_call.json == body
    assert create_call.headers["authorization"] == f"Bearer {kie.api_key}"
    assert (create_call.status, create_call.code) == (200, 200)
    assert all(call.query == {"taskId": task_id} for call in kie.calls_to("recordInfo"))
    assert [task.task_id for task in kie.created_tasks()] == [task_id]
    assert kie.tasks[task_id].state == "success"
    assert kie.violations == 0


def _drop_aspect_ratio(body: dict[str, Any]) -> None:
    del body["input"]["aspect_ratio"]


def _i2i(urls: list[str], aspect_ratio: str = "auto") -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["model"] = "flux-2/flex-image-to-image"
        body["input"].update(input_urls=urls, aspect_ratio=aspect_ratio)

    return mutate


IMAGE = "{cdn}/a.png"  # the test swaps in the loopback CDN: image-to-image inputs are fetched
VALIDATION_CASES = [
    ("ok", None, None, 200),
    ("prompt-3-chars", lambda b: b["input"].update(prompt="cat"), None, 200),
    ("prompt-5000-chars", lambda b: b["input"].update(prompt="x" * 5000), None, 200),
    ("short-prompt", lambda b: b["input"].update(prompt="ab"), None, 422),
    ("blank-prompt", lambda b: b["input"].update(prompt="    "), None, 422),
    ("long-prompt", lambda b: b["input"].update(prompt="x" * 5001), None, 422),
    ("prompt-not-string", lambda b: b["input"].update(prompt=["a cat"]), None, 422),
    ("auto-without-input-urls", lambda b: b["input"].update(aspect_ratio="auto"), None, 422),
    ("bad-aspect-ratio", lambda b: b["input"].update(aspect_ratio="5:4"), None, 422),
    ("missing-aspect-ratio", _drop_aspect_ratio, None, 422),
    ("bad-resolution", lambda b: b["input"].update(resolution="4K"), None, 422),
    ("nsfw-not-bool", lambda b: b["input"].update(nsfw_checker="yes"), None, 422),
    ("bad-model", lambda b: b.update(model="flux-3/anything"), None, 404),
    ("missing-model", lambda b: b.pop("model"), None, 422),
    ("missing-input", lambda b: b.pop("input"), None, 422),
    ("bad-callback-url", lambda b: b.update(callBackUrl="not a url"), None, 422),
    ("input-urls-on-text-model", lambda b: b["input"].update(input_urls=[IMAGE]), None, 422),
    ("i2i-auto", _i2i([IMAGE]), None, 200),
    ("i2i-fixed-ratio", _i2i([IMAGE], "3:4"), None, 200),
    ("i2i-bad-ratio", _i2i([IMAGE], "5:4"), None, 422),
    ("i2i-8-urls", _i2i([IMAGE] * 8, "16:9"), None, 200),
    ("i2i-9-urls", _i2i([IMAGE] * 9), None, 422),
    ("i2i-no-urls", _i2i([]), None, 422),
    ("i2i-ftp-url", _i2i(["ftp://example.com/a.png"]), None, 422),
    ("missing-auth", None, {}, 401),
    ("wrong-key", None, {"Authorization": "Bearer nope"}, 401),
]


@pytest.mark.parametrize(
    ("mutate", "headers", "expected"),
    [case[1:] for case in VALIDATION_CASES],
    ids=[case[0] for case in VALIDATION_CASES],
)
async def test_create_validation(
    kie: FakeKie,
    http: aiohttp.ClientSession,
    cdn: Cdn,
    mutate: Callable[[dict[str, Any]], None] | None,
    headers: dict[str, str] | None,
    expected: int,
) -> None:
    body = t2i_body()
    if mutate is not None:
        mutate(body)
    urls = body.get("input", {}).get("input_urls")
    if isinstance(urls, list):
        body["input"]["input_urls"] = [url.replace("{cdn}", cdn.url) for url in urls]
    status, envelope = await create(http, kie, body, headers)
    assert status == 200  # kie.ai answers envelope errors with HTTP 200
    assert envelope["code"] == expected, envelope
    assert len(kie.tasks) == (1 if expected == 200 else 0)
    assert kie.credits == (1000 - 14 if expected == 200 else 1000)
    if expected == 401:
        assert envelope["msg"] == "You do not have access permissions"


async def test_malformed_json_body_is_422(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    async with http.post(kie.base_url + CREATE, data=b"{not json", headers=auth(kie)) as response:
        assert (await response.json())["code"] == 422


async def test_insufficient_credits(http: aiohttp.ClientSession) -> None:
    async with FakeKie(credits=20) as fake:
        _, envelope = await create(http, fake, t2i_body(resolution="2K"))
        assert (envelope["code"], envelope["msg"]) == (402, "Credits insufficient")
        _, envelope = await create(http, fake, t2i_body(resolution="1K"))
        assert envelope["code"] == 200
        _, envelope = await create(http, fake, t2i_body())
        assert envelope["code"] == 402
        assert fake.credits == 6 and len(fake.tasks) == 1


async def test_fail_script(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    kie.script_next(
        TaskScript(states=["queuing", "fail"], fail_code="422", fail_msg="prohibited content")
    )
    _, envelope = await create(http, kie, t2i_body())
    data = (await poll_until_final(http, kie, envelope["data"]["taskId"]))[-1]
    assert data["state"] == "fail"
    assert (data["failCode"], data["failMsg"]) == ("422", "prohibited content")
    assert data["resultJson"] == ""
    assert isinstance(data["completeTime"], int)


async def test_scripts_apply_in_order_then_default(
    kie: FakeKie, http: aiohttp.ClientSession
) -> None:
    kie.script_next(TaskScript(states=["fail"]), TaskScript(states=["generating", "success"]))
    ids = [(await create(http, kie, t2i_body()))[1]["data"]["taskId"] for _ in range(3)]
    assert [kie.tasks[i].script.states for i in ids] == [
        ["fail"],
        ["generating", "success"],
        ["waiting", "generating", "success"],
    ]


async def test_unknown_and_missing_task_id(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    status, envelope = await query(http, kie, "task_flux-2_nope")
    assert (status, envelope["code"]) == (200, 404)
    _, envelope = await query(http, kie, None)
    assert envelope["code"] == 422


async def test_submit_rate_limit(http: aiohttp.ClientSession) -> None:
    async with FakeKie(submit_window=0.5) as fake:
        results = await asyncio.gather(*(create(http, fake, t2i_body()) for _ in range(21)))
        assert sorted(envelope["code"] for _, envelope in results) == [200] * 20 + [429]
        (rejected,) = [(s, e) for s, e in results if e["code"] == 429]
        assert rejected[0] == 429 and rejected[1]["data"] is None
        assert (fake.submit_violations, fake.violations) == (1, 1)
        assert len(fake.tasks) == 20  # the rejected one was not queued
        assert fake.credits == 1000 - 20 * 14

        await asyncio.sleep(0.55)  # the window slid past the burst
        _, envelope = await create(http, fake, t2i_body())
        assert envelope["code"] == 200 and fake.violations == 1


async def test_rate_limit_status_and_body_are_configurable(http: aiohttp.ClientSession) -> None:
    async with FakeKie(submit_limit=1, rate_limit_http_status=200) as fake:
        await create(http, fake, t2i_body())
        status, envelope = await create(http, fake, t2i_body())
        assert (status, envelope["code"]) == (200, 429)
        fake.rate_limit_http_status = 429
        fake.rate_limit_body = "Too Many Requests"
        async with http.post(
            fake.base_url + CREATE, json=t2i_body(), headers=auth(fake)
        ) as response:
            assert (response.status, await response.text()) == (429, "Too Many Requests")
        assert fake.submit_violations == 2


async def test_query_rate_limit(http: aiohttp.ClientSession) -> None:
    async with FakeKie(query_window=0.3) as fake:
        _, envelope = await create(http, fake, t2i_body())
        task_id = envelope["data"]["taskId"]
        results = await asyncio.gather(*(query(http, fake, task_id) for _ in range(11)))
        assert sorted(envelope["code"] for _, envelope in results) == [200] * 10 + [429]
        assert sorted(status for status, _ in results) == [200] * 10 + [429]
        assert (fake.query_violations, fake.violations) == (1, 1)

        await asyncio.sleep(0.35)
        assert (await query(http, fake, task_id))[1]["code"] == 200


async def test_create_faults(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    kie.fail_create_next(
        CreateFault(502, http_status=502, body="<html>bad gateway</html>"),
        CreateFault(500, body="not json"),
        CreateFault(455),
        CreateFault(429, http_status=429),
        CreateFault(433, msg="sub-key cap"),
    )
    answers = []
    for _ in range(5):
        async with http.post(kie.base_url + CREATE, json=t2i_body(), headers=auth(kie)) as resp:
            answers.append((resp.status, resp.content_type, await resp.text()))
    assert answers[0] == (502, "text/html", "<html>bad gateway</html>")
    assert answers[1] == (200, "text/plain", "not json")
    assert json.loads(answers[2][2])["code"] == 455
    assert answers[3][0] == 429 and json.loads(answers[3][2])["code"] == 429
    assert json.loads(answers[4][2]) == {"code": 433, "msg": "sub-key cap", "data": None}
    assert [call.code for call in kie.calls_to("createTask")] == [None, None, 455, 429, 433]

    assert kie.tasks == {} and kie.credits == 1000
    assert kie.violations == 0  # injected 429s are not violations
    assert (await create(http, kie, t2i_body()))[1]["code"] == 200  # faults were used up


async def test_drop_connection(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    kie.fail_create_next(
        CreateFault(500, drop_connection=True),
        CreateFault(200, drop_connection=True, creates_task=True),
    )
    for _ in range(2):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await create(http, kie, t2i_body())
    assert [call.status for call in kie.calls_to("createTask")] == [0, 0]
    (task,) = kie.created_tasks()  # only the second really created a task
    assert kie.credits == 1000 - 14
    assert (await query(http, kie, task.task_id))[1]["code"] == 200


async def test_delay_fault(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    kie.fail_create_next(
        CreateFault(200, delay=0.4, creates_task=True), CreateFault(200, delay=0.2)
    )
    with pytest.raises(TimeoutError):
        async with http.post(
            kie.base_url + CREATE,
            json=t2i_body(),
            headers=auth(kie),
            timeout=aiohttp.ClientTimeout(total=0.1),
        ):
            pass
    await kie.wait_for_tasks(1, timeout=1)  # created although the client gave up

    started = time.monotonic()
    _, envelope = await create(http, kie, t2i_body())  # pure delay: then answered normally
    assert time.monotonic() - started >= 0.19
    assert envelope["code"] == 200 and len(kie.tasks) == 2


async def test_query_faults(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    _, envelope = await create(http, kie, t2i_body())
    task_id = envelope["data"]["taskId"]
    kie.fail_query_next(CreateFault(500, http_status=500, body="oops"), CreateFault(455))
    async with http.get(
        kie.base_url + RECORD, params={"taskId": task_id}, headers=auth(kie)
    ) as response:
        assert (response.status, await response.text()) == (500, "oops")
    assert (await query(http, kie, task_id))[1]["code"] == 455
    assert (await query(http, kie, task_id))[1]["code"] == 200
    assert kie.violations == 0


async def test_download_url_fallback(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    kie.script_next(TaskScript(states=["success"], download_status=404, result_url_count=2))
    _, envelope = await create(http, kie, t2i_body())
    data = (await query(http, kie, envelope["data"]["taskId"]))[1]["data"]
    urls = json.loads(data["resultJson"])["resultUrls"]
    assert len(urls) == 2
    async with http.get(urls[1]) as response:
        assert response.status == 404  # expired direct link

    async with http.post(
        kie.base_url + "/api/v1/common/download-url", json={"url": urls[1]}, headers=auth(kie)
    ) as response:
        envelope = await response.json()
    assert envelope["code"] == 200
    async with http.get(envelope["data"]) as response:
        assert response.status == 200 and await response.read() == TINY_PNG

    async with http.get(urls[1] + "?fresh=forged") as response:
        assert response.status == 403
    async with http.post(
        kie.base_url + "/api/v1/common/download-url",
        json={"url": "https://elsewhere.example/x.png"},
        headers=auth(kie),
    ) as response:
        assert (await response.json())["code"] == 422


async def _receiver(
    answer_status: int = 200,
) -> tuple[web.AppRunner, str, asyncio.Queue[tuple[dict[str, str], Any]]]:
    received: asyncio.Queue[tuple[dict[str, str], Any]] = asyncio.Queue()

    async def handle(request: web.Request) -> web.Response:
        await received.put((dict(request.headers), await request.json()))
        return web.json_response({"code": 200, "msg": "success"}, status=answer_status)

    app = web.Application()
    app.router.add_post("/kie/callback", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/kie/callback", received


async def test_signed_callback(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    kie.webhook_hmac_key = "hook-secret"
    kie.script_next(TaskScript(), TaskScript(states=["generating", "fail"], fail_msg="nope"))
    runner, url, received = await _receiver()
    try:
        body = t2i_body() | {"callBackUrl": url}
        _, first = await create(http, kie, body)
        _, second = await create(http, kie, body)
        got = [await asyncio.wait_for(received.get(), 2) for _ in range(2)]
    finally:
        await runner.cleanup()

    task_id = first["data"]["taskId"]
    by_task = {payload["data"]["taskId"]: (hdrs, payload) for hdrs, payload in got}
    headers, callback = by_task[task_id]
    _, failed = by_task[second["data"]["taskId"]]
    timestamp = headers["X-Webhook-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 5
    expected = base64.b64encode(
        hmac.new(b"hook-secret", f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    ).decode()
    assert hmac.compare_digest(headers["X-Webhook-Signature"], expected)

    assert callback["code"] == 200
    data = callback["data"]
    assert (data["taskId"], data["state"], data["creditsConsumed"]) == (task_id, "success", 14)
    assert json.loads(data["param"]) == body
    assert json.loads(data["resultJson"])["resultUrls"] == kie.tasks[task_id].result_urls
    assert data["costTime"] == 0  # seconds (0.1 s rounds down), unlike recordInfo's ms
    assert data["failCode"] is None

    assert failed["code"] == 501
    assert failed["data"]["taskId"] == second["data"]["taskId"]
    assert (failed["data"]["state"], failed["data"]["failMsg"]) == ("fail", "nope")
    assert sorted(kie.callbacks_sent) == sorted([(task_id, 200), (second["data"]["taskId"], 200)])


async def test_a_callback_can_go_to_another_address_with_its_path_kept(
    kie: FakeKie, http: aiohttp.ClientSession
) -> None:
    # As a load balancer in front of several bot processes would pick one.
    runner, url, received = await _receiver()
    try:
        elsewhere = url.removesuffix("/kie/callback")
        kie.script_next(TaskScript(callback_base=elsewhere))
        body = t2i_body() | {"callBackUrl": "http://127.0.0.1:9/kie/callback"}  # nobody there
        _, created = await create(http, kie, body)
        _, payload = await asyncio.wait_for(received.get(), 2)
    finally:
        await runner.cleanup()
    assert payload["data"]["taskId"] == created["data"]["taskId"]
    assert kie.callbacks_sent == [(created["data"]["taskId"], 200)]


async def test_broken_callback_receivers_do_not_hurt(http: aiohttp.ClientSession) -> None:
    runner, url, received = await _receiver(answer_status=500)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}/callback"
    try:
        async with FakeKie() as fake:
            fake.default_script = TaskScript(states=["success"])
            _, broken = await create(http, fake, t2i_body() | {"callBackUrl": url})
            _, dead = await create(http, fake, t2i_body() | {"callBackUrl": dead_url})
            await asyncio.wait_for(received.get(), 2)
            await eventually(lambda: len(fake.callbacks_sent) == 2, 1, what="both callbacks")
            assert sorted(fake.callbacks_sent) == sorted(
                [(broken["data"]["taskId"], 500), (dead["data"]["taskId"], 0)]
            )
            assert (await create(http, fake, t2i_body()))[1]["code"] == 200  # still serving
    finally:
        await runner.cleanup()


async def test_stop_with_pending_callback_and_delay(http: aiohttp.ClientSession) -> None:
    fake = FakeKie()
    await fake.start()
    fake.script_next(TaskScript(step_seconds=30))
    await create(http, fake, t2i_body() | {"callBackUrl": "http://127.0.0.1:9/never"})
    fake.fail_create_next(CreateFault(500, delay=30))
    pending = asyncio.create_task(create(http, fake, t2i_body()))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await fake.stop()
    assert time.monotonic() - started < 2
    assert fake.callbacks_sent == []
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)


async def test_wait_for_tasks_times_out(kie: FakeKie) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        await kie.wait_for_tasks(1, timeout=0.05)


# --- the upload host ---------------------------------------------------------------------------


async def post_json(
    http: aiohttp.ClientSession,
    fake: FakeKie,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        fake.upload_base_url + path, json=body, headers=auth(fake) if headers is None else headers
    ) as response:
        return response.status, await response.json(content_type=None)


async def upload_stream(
    http: aiohttp.ClientSession, fake: FakeKie, data: bytes, **fields: str
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=fields.pop("filename", "cat.png"))
    for name, value in fields.items():
        form.add_field(name, value)
    async with http.post(
        fake.upload_base_url + STREAM_UPLOAD, data=form, headers=auth(fake)
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_upload_by_url_stores_and_serves_the_file(
    kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn
) -> None:
    source = f"{cdn.url}/a.png?ex=6650&is=664f&hm=abc"  # signed like a Discord attachment URL
    body = {"fileUrl": source, "uploadPath": "discord/42"}
    status, envelope = await post_json(http, kie, URL_UPLOAD, body)

    assert status == 200
    assert (envelope["success"], envelope["code"]) == (True, 200)
    assert envelope["msg"] == "File uploaded successfully"
    data = envelope["data"]
    assert set(data) == {
        "fileName",
        "filePath",
        "downloadUrl",
        "fileSize",
        "mimeType",
        "uploadedAt",
    }
    assert (data["fileName"], data["filePath"]) == ("a.png", "discord/42/a.png")  # name from URL
    assert (data["fileSize"], data["mimeType"]) == (len(TINY_PNG), "image/png")
    uploaded_at = datetime.datetime.fromisoformat(data["uploadedAt"])
    assert data["uploadedAt"].endswith("Z")
    assert abs(uploaded_at.timestamp() - time.time()) < 5
    assert cdn.hits == ["/a.png?ex=6650&is=664f&hm=abc"]  # really fetched, query and all

    async with http.get(data["downloadUrl"]) as response:  # public: no auth header
        assert response.status == 200 and response.content_type == "image/png"
        assert await response.read() == TINY_PNG

    (upload,) = kie.uploads
    assert (upload.source, upload.data, upload.upload_path) == (source, TINY_PNG, "discord/42")
    assert upload.download_url == data["downloadUrl"]
    assert kie.stored_file(data["downloadUrl"]) is upload
    (fetch,) = kie.fetches
    assert (fetch.url, fetch.purpose, fetch.status, fetch.error) == (source, "upload", 200, "")
    (call,) = kie.calls_to(URL_UPLOAD)
    assert call.json == body and (call.status, call.code) == (200, 200)


async def test_upload_by_url_with_file_name(
    kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn
) -> None:
    body = {"fileUrl": f"{cdn.url}/untyped", "uploadPath": "/in/", "fileName": "job 7.png"}
    _, envelope = await post_json(http, kie, URL_UPLOAD, body)
    assert envelope["data"]["filePath"] == "in/job 7.png"
    assert envelope["data"]["mimeType"] == "image/png"  # sniffed, not the declared octet-stream
    async with http.get(envelope["data"]["downloadUrl"]) as response:
        assert await response.read() == TINY_PNG


async def test_upload_by_stream(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    status, envelope = await upload_stream(
        http, kie, JPEG, uploadPath="bot/uploads", fileName="custom.jpg"
    )
    assert (status, envelope["success"]) == (200, True)
    data = envelope["data"]
    assert (data["filePath"], data["mimeType"], data["fileSize"]) == (
        "bot/uploads/custom.jpg",
        "image/jpeg",
        len(JPEG),
    )
    async with http.get(data["downloadUrl"]) as response:
        assert await response.read() == JPEG

    _, envelope = await upload_stream(http, kie, TINY_PNG, uploadPath="bot", filename="x.png")
    assert envelope["data"]["fileName"] == "x.png"  # the part's own name when none is given

    assert [(u.source, u.file_path) for u in kie.uploads] == [
        ("stream", "bot/uploads/custom.jpg"),
        ("stream", "bot/x.png"),
    ]
    first = kie.calls_to(STREAM_UPLOAD)[0]
    assert first.json is None
    assert first.form == {
        "file": {"filename": "cat.png", "content_type": "application/octet-stream"},
        "uploadPath": "bot/uploads",
        "fileName": "custom.jpg",
    }


@pytest.mark.parametrize(
    "payload",
    [base64.b64encode(WEBP).decode(), "data:image/webp;base64," + base64.b64encode(WEBP).decode()],
)
async def test_upload_by_base64(kie: FakeKie, http: aiohttp.ClientSession, payload: str) -> None:
    body = {"base64Data": payload, "uploadPath": "b64"}
    status, envelope = await post_json(http, kie, BASE64_UPLOAD, body)
    assert status == 200
    data = envelope["data"]
    assert data["mimeType"] == "image/webp" and data["fileName"].endswith(".webp")  # random name
    assert kie.uploads[0].source == "base64" and kie.uploads[0].data == WEBP


@pytest.mark.parametrize("path", [URL_UPLOAD, STREAM_UPLOAD, BASE64_UPLOAD])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}], ids=["none", "wrong"])
async def test_upload_requires_the_key(
    kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn, path: str, headers: dict[str, str]
) -> None:
    body = {"fileUrl": f"{cdn.url}/a.png", "base64Data": "AAAA", "uploadPath": "x"}
    async with http.post(kie.base_url + path, json=body, headers=headers) as response:
        assert response.status == 401
        envelope = await response.json()
    assert envelope == {"success": False, "code": 401, "msg": "Unauthorized access", "data": None}
    assert kie.uploads == [] and cdn.hits == []


async def test_upload_errors_can_come_with_http_200(
    kie: FakeKie, http: aiohttp.ClientSession
) -> None:
    kie.upload_errors_use_http_status = False
    status, envelope = await post_json(http, kie, URL_UPLOAD, {"fileUrl": dead_url()}, headers={})
    assert (status, envelope["code"], envelope["success"]) == (200, 401, False)
    status, envelope = await post_json(http, kie, URL_UPLOAD, {"fileUrl": dead_url()})
    assert (status, envelope["code"]) == (200, 400)


UPLOAD_REJECTIONS = [
    ("not-json-object", ["a"]),
    ("missing-file-url", {"uploadPath": "x"}),
    ("ftp-file-url", {"fileUrl": "ftp://example.com/a.png", "uploadPath": "x"}),
    ("missing-upload-path", {"fileUrl": "{cdn}/a.png"}),
    ("dot-dot-upload-path", {"fileUrl": "{cdn}/a.png", "uploadPath": "x/../y"}),
    ("slash-in-file-name", {"fileUrl": "{cdn}/a.png", "uploadPath": "x", "fileName": "a/b.png"}),
    ("source-404", {"fileUrl": "{cdn}/missing.png", "uploadPath": "x"}),
    ("source-unreachable", {"fileUrl": "{dead}", "uploadPath": "x"}),
]


@pytest.mark.parametrize(
    "body", [case[1] for case in UPLOAD_REJECTIONS], ids=[case[0] for case in UPLOAD_REJECTIONS]
)
async def test_url_upload_rejections(
    kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn, body: Any
) -> None:
    if isinstance(body, dict):
        body = {
            key: value.replace("{cdn}", cdn.url).replace("{dead}", dead_url())
            for key, value in body.items()
        }
    status, envelope = await post_json(http, kie, URL_UPLOAD, body)
    assert (status, envelope["success"], envelope["code"]) == (400, False, 400), envelope
    assert envelope["data"] is None and envelope["msg"]
    assert kie.uploads == []


async def test_unreachable_url_is_recorded(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    url = dead_url()
    _, envelope = await post_json(http, kie, URL_UPLOAD, {"fileUrl": url, "uploadPath": "x"})
    assert envelope["code"] == 400 and "download" in envelope["msg"]
    (fetch,) = kie.fetches
    assert (fetch.url, fetch.status) == (url, 0) and "ClientConnectorError" in fetch.error


async def test_stream_and_base64_rejections(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("uploadPath", "x")
    async with http.post(kie.base_url + STREAM_UPLOAD, data=form, headers=auth(kie)) as response:
        assert response.status == 400 and (await response.json())["msg"] == "file is required"
    status, envelope = await post_json(http, kie, STREAM_UPLOAD, {"uploadPath": "x"})  # JSON
    assert (status, envelope["code"]) == (400, 400)
    status, envelope = await upload_stream(http, kie, b"", uploadPath="x")
    assert (status, envelope["msg"]) == (400, "The file is empty")
    for bad in ({"base64Data": "not base64!", "uploadPath": "x"}, {"uploadPath": "x"}):
        status, envelope = await post_json(http, kie, BASE64_UPLOAD, bad)
        assert (status, envelope["code"]) == (400, 400)
    assert kie.uploads == []


async def test_non_images_are_stored_unless_images_only(
    kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn
) -> None:
    body = {"fileUrl": f"{cdn.url}/page.html", "uploadPath": "x"}
    _, envelope = await post_json(http, kie, URL_UPLOAD, body)
    assert envelope["code"] == 200  # documented: "images, videos, documents, etc."
    assert envelope["data"]["mimeType"] == "text/html"

    kie.upload_images_only = True
    status, envelope = await post_json(http, kie, URL_UPLOAD, body)
    assert (status, envelope["code"], envelope["msg"]) == (
        400,
        400,
        "Only image files are accepted",
    )
    status, envelope = await upload_stream(http, kie, HTML, uploadPath="x")
    assert (status, envelope["code"]) == (400, 400)
    assert len(kie.uploads) == 1


async def test_upload_size_limit(kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn) -> None:
    kie.upload_max_bytes = len(TINY_PNG)
    _, envelope = await post_json(
        http, kie, URL_UPLOAD, {"fileUrl": f"{cdn.url}/a.png", "uploadPath": "x"}
    )
    assert envelope["code"] == 200  # exactly at the limit
    _, envelope = await post_json(
        http, kie, URL_UPLOAD, {"fileUrl": f"{cdn.url}/big.png", "uploadPath": "x"}
    )
    assert envelope["code"] == 400 and "larger than" in envelope["msg"]
    status, envelope = await upload_stream(http, kie, TINY_PNG + b"x", uploadPath="x")
    assert (status, envelope["code"]) == (400, 400) and "exceeds" in envelope["msg"]
    assert len(kie.uploads) == 1


async def test_same_file_path_overwrites(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    _, first = await upload_stream(http, kie, TINY_PNG, uploadPath="x", fileName="image.png")
    _, second = await upload_stream(http, kie, JPEG, uploadPath="x", fileName="image.png")
    assert first["data"]["downloadUrl"] == second["data"]["downloadUrl"]
    async with http.get(first["data"]["downloadUrl"]) as response:
        assert await response.read() == JPEG  # documented: "the old file will be overwritten"
    assert len(kie.uploads) == 2


async def test_uploaded_files_expire(kie: FakeKie, http: aiohttp.ClientSession) -> None:
    kie.upload_ttl = 0.1
    _, envelope = await upload_stream(http, kie, TINY_PNG, uploadPath="x")
    url = envelope["data"]["downloadUrl"]
    async with http.get(url) as response:
        assert response.status == 200
    await asyncio.sleep(0.15)
    async with http.get(url) as response:
        assert response.status == 404
    async with http.get(url.replace("/x/", "/y/")) as response:
        assert response.status == 404


async def test_upload_faults(kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn) -> None:
    kie.fail_upload_next(
        CreateFault(500),
        CreateFault(502, http_status=502, body="<html>bad gateway</html>"),
        CreateFault(200, delay=0.2),
    )
    body = {"fileUrl": f"{cdn.url}/a.png", "uploadPath": "x"}
    status, envelope = await post_json(http, kie, URL_UPLOAD, body)
    assert (status, envelope) == (
        500,
        {"success": False, "code": 500, "msg": "Internal server error", "data": None},
    )
    async with http.post(kie.base_url + URL_UPLOAD, json=body, headers=auth(kie)) as response:
        assert (response.status, await response.text()) == (502, "<html>bad gateway</html>")
    started = time.monotonic()
    status, envelope = await post_json(http, kie, URL_UPLOAD, body)  # a pure delay
    assert time.monotonic() - started >= 0.19 and envelope["code"] == 200
    assert len(kie.uploads) == 1 and len(cdn.hits) == 1  # faults answered before any fetch


# --- image-to-image inputs ---------------------------------------------------------------------


def i2i_body(urls: list[str], model: str = "flux-2/flex-image-to-image") -> dict[str, Any]:
    return {
        "model": model,
        "input": {
            "prompt": "the same lighthouse, in winter",
            "input_urls": urls,
            "aspect_ratio": "auto",
            "resolution": "1K",
        },
    }


@pytest.mark.parametrize("model", ["flux-2/flex-image-to-image", "flux-2/pro-image-to-image"])
async def test_i2i_from_an_uploaded_file(
    kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn, model: str
) -> None:
    kie.default_script = TaskScript(step_seconds=0.05)
    _, uploaded = await post_json(
        http, kie, URL_UPLOAD, {"fileUrl": f"{cdn.url}/a.png", "uploadPath": "discord/1"}
    )
    image_url = uploaded["data"]["downloadUrl"]
    others = [f"{cdn.url}/photo.jpg", f"{cdn.url}/pic.webp", f"{cdn.url}/untyped"]
    status, envelope = await create(http, kie, i2i_body([image_url, *others], model))
    assert (status, envelope["code"]) == (200, 200), envelope

    task = kie.tasks[envelope["data"]["taskId"]]
    assert task.input_urls == [image_url, *others]
    assert task.input_images == [TINY_PNG, JPEG, WEBP, TINY_PNG]
    assert [f.purpose for f in kie.fetches] == ["upload"] + ["input"] * 4
    assert kie.credits == 1000 - (14 if "flex" in model else 5)

    data = (await poll_until_final(http, kie, task.task_id))[-1]
    assert json.loads(data["param"])["input"]["input_urls"] == task.input_urls
    (url,) = json.loads(data["resultJson"])["resultUrls"]
    async with http.get(url) as response:
        result = await response.read()
    assert result == I2I_RESULT_PNG == task.script.image  # told apart from text-to-image's
    assert sniff_image(result) == "image/png" and result != TINY_PNG


I2I_REJECTIONS = [
    ("html", ["/page.html"], "input_urls[0] is not a JPEG, PNG or WebP image"),
    ("lying-content-type", ["/lying.png"], "input_urls[0] is not a JPEG"),
    ("gif", ["/anim.gif"], "input_urls[0] is not a JPEG"),
    ("second-of-two", ["/a.png", "/page.html"], "input_urls[1] is not a JPEG"),
    ("over-10-mb", ["/big.png"], "input_urls[0] could not be downloaded: the file is larger"),
    (
        "404",
        ["/missing.png"],
        "input_urls[0] could not be downloaded: the server answered HTTP 404",
    ),
    ("unreachable", ["{dead}"], "input_urls[0] could not be downloaded: the download failed"),
]


@pytest.mark.parametrize(
    ("paths", "message"),
    [case[1:] for case in I2I_REJECTIONS],
    ids=[case[0] for case in I2I_REJECTIONS],
)
async def test_i2i_rejects_unusable_inputs_at_create(
    kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn, paths: list[str], message: str
) -> None:
    urls = [dead_url() if path == "{dead}" else cdn.url + path for path in paths]
    status, envelope = await create(http, kie, i2i_body(urls))
    assert (status, envelope["code"]) == (200, 422)
    assert envelope["msg"].startswith(message), envelope["msg"]
    assert kie.tasks == {} and kie.credits == 1000
    assert [f.url for f in kie.fetches] == urls and any(f.error for f in kie.fetches)


async def test_i2i_accepts_exactly_10_mb(
    kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn
) -> None:
    _, envelope = await create(http, kie, i2i_body([f"{cdn.url}/10mb.png"]))
    assert envelope["code"] == 200
    assert len(kie.created_tasks()[0].input_images[0]) == 10_000_000


async def test_i2i_shape_errors_are_refused_before_any_fetch(
    kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn
) -> None:
    for body in (
        i2i_body([f"{cdn.url}/a.png"] * 9),  # more than 8
        i2i_body([]),
        i2i_body([f"{cdn.url}/a.png"]) | {"model": "flux-2/flex-text-to-image"},  # auto, t2i
        t2i_body(aspect_ratio="auto"),
    ):
        _, envelope = await create(http, kie, body)
        assert envelope["code"] == 422, body
    assert kie.fetches == [] and cdn.hits == [] and kie.tasks == {}


async def test_i2i_bad_input_can_fail_the_task_instead(
    kie: FakeKie, http: aiohttp.ClientSession, cdn: Cdn
) -> None:
    kie.input_rejection = "task"
    kie.script_next(TaskScript(states=["queuing", "success"], step_seconds=0.05))
    _, envelope = await create(http, kie, i2i_body([f"{cdn.url}/page.html"]))
    assert envelope["code"] == 200
    task = kie.tasks[envelope["data"]["taskId"]]
    assert task.script.states == ["queuing", "fail"] and task.input_images == []
    data = (await poll_until_final(http, kie, task.task_id))[-1]
    assert (data["state"], data["failCode"]) == ("fail", "422")
    assert data["failMsg"] == "input_urls[0] is not a JPEG, PNG or WebP image"
    assert kie.credits == 1000 - 14  # charged at creation, like every task here


async def test_refused_i2i_create_still_used_its_rate_limit_slot(
    http: aiohttp.ClientSession, cdn: Cdn
) -> None:
    async with FakeKie(submit_limit=2) as fake:
        _, envelope = await create(http, fake, i2i_body([f"{cdn.url}/page.html"]))
        assert envelope["code"] == 422
        assert (await create(http, fake, t2i_body()))[1]["code"] == 200
        assert (await create(http, fake, t2i_body()))[1]["code"] == 429
        assert fake.submit_violations == 1


async def test_input_download_neither_blocks_nor_reorders_admission(
    http: aiohttp.ClientSession, cdn: Cdn
) -> None:
    async with FakeKie(submit_limit=2) as fake:
        slow = asyncio.create_task(create(http, fake, i2i_body([f"{cdn.url}/slow.png"])))
        await asyncio.wait_for(cdn.hit.wait(), 2)  # the slow create was admitted, is downloading
        started = time.monotonic()
        assert (await create(http, fake, t2i_body()))[1]["code"] == 200
        assert (await create(http, fake, t2i_body()))[1]["code"] == 429  # the slot is taken
        assert time.monotonic() - started < 0.3  # answered while the download still runs
        assert not slow.done()
        assert (await slow)[1]["code"] == 200
        assert len(fake.tasks) == 2 and fake.submit_violations == 1


SNIFF_CASES = [
    (TINY_PNG, "image/png"),
    (JPEG, "image/jpeg"),
    (WEBP, "image/webp"),
    (GIF, "image/gif"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
    (HTML, None),
    (b"", None),
]


@pytest.mark.parametrize(("data", "expected"), SNIFF_CASES)
def test_sniff_image(data: bytes, expected: str | None) -> None:
    assert sniff_image(data) == expected
