"""Self-test of tests/fakes/kie_server.py, through a plain aiohttp client (no bot code)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.kie_server import TINY_PNG, CreateFault, FakeKie, TaskScript

CREATE = "/api/v1/jobs/createTask"
RECORD = "/api/v1/jobs/recordInfo"
POLL_INTERVAL = 0.12  # keeps every test under the 10 queries/s limit


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


IMAGE = "https://example.com/a.png"
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
    mutate: Callable[[dict[str, Any]], None] | None,
    headers: dict[str, str] | None,
    expected: int,
) -> None:
    body = t2i_body()
    if mutate is not None:
        mutate(body)
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
            for _ in range(100):
                if len(fake.callbacks_sent) == 2:
                    break
                await asyncio.sleep(0.01)
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
