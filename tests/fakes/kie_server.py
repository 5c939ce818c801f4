"""In-process fake of kie.ai's Flux-2 job API and its file upload host, for tests.

This module owns the fake service and nothing of the bot: an aiohttp server on 127.0.0.1 that
answers ``createTask``, ``recordInfo``, ``common/download-url`` and ``chat/credit`` the way
``/work/shared/kie-api`` documents them, serves the result files, walks each task through a
scripted lifecycle, sends (optionally signed) callbacks, injects faults, enforces the documented
rate limits (counting every request over them as a violation) and records every request that
crossed the wire so tests can assert on it.

The same server also plays the upload host (``https://kieai.redpandaai.co`` in production; the
bot gets a separate base URL for it, which tests point here): ``POST /api/file-url-upload``,
``/api/file-stream-upload`` and ``/api/file-base64-upload``, as docs.kie.ai's File Upload API
pages describe them (2025/26; request fields ``fileUrl`` / multipart ``file`` / ``base64Data``,
plus ``uploadPath`` and optional ``fileName``). A success answers ``{"success": true, "code":
200, "msg": "File uploaded successfully", "data": {"fileName", "filePath", "downloadUrl",
"fileSize", "mimeType", "uploadedAt"}}``; ``downloadUrl`` is served here under ``/tempfile/``.
Image-to-image tasks download their ``input_urls`` when created, as the real service must.
Outgoing downloads are recorded in ``fetches``, stored files in ``uploads``.

Choices where the docs are silent or ambiguous (see ``FakeKie`` for the knobs):

- Envelope errors (401, 402, 404, 422) come with HTTP 200: the OpenAPI page documents only HTTP
  200 and 500 answers and the notes say to read ``code``. ``auth_http_status`` flips 401s to a
  real HTTP 401.
- Rate limits are sliding windows over the requests the limiter *admitted* (timestamped on
  receipt), so an admitted create that then fails validation or credits still used its slot.
- Credits are charged when a task is created and never refunded.
- Several accounts: ``add_account(key, credits)`` adds another API key with its own balance and
  its own rate-limit windows and violation counts (kie.ai's limits are per account/key); the
  constructor's ``api_key`` is the first account, kept in the top-level attributes. A task
  belongs to the account whose key created it: ``recordInfo`` with another key answers as for
  an unknown task (404, "recordInfo is null"), as kie.ai does not know it under that account,
  and ``common/download-url`` refuses its files ("not a generated file of this account").
- Pro models cost 5/7 credits (1K/2K), flex models 14/24, as the third-party lists in the notes.

Upload host (the docs list HTTP 400, 401 and 500 answers but show no error body):

- Errors answer with the HTTP status equal to ``code`` and the success envelope's shape,
  ``{"success": false, "code": 400|401|500, "msg": ..., "data": null}``;
  ``upload_errors_use_http_status = False`` answers them with HTTP 200 instead.
- ``uploadPath`` is required (every documented example sends it; "." / ".." / empty segments are
  refused). Without ``fileName`` the name comes from the URL's last path segment (documented for
  URL uploads), the multipart part's filename, or is random. The same ``filePath`` overwrites the
  earlier file (documented), so two uploads of Discord's ``image.png`` into one ``uploadPath``
  collide, as they would for real.
- Any file type is accepted ("images, videos, documents"); ``mimeType`` is sniffed from the
  bytes, else taken from the declared type. ``upload_images_only = True`` refuses non-images
  with 400 instead. A ``fileUrl`` that cannot be downloaded (connection error, non-200 answer,
  over the 30 s documented download timeout) is refused with 400.
- Size: the docs only *recommend* at most 100MB; the fake enforces 100,000,000 bytes
  (``upload_max_bytes``) per file, with 400. Stored files expire after 3 days (``upload_ttl``;
  docs.kie.ai says 3 days, an older mirror also says 24 hours somewhere).

Image-to-image inputs (the docs do not say when a bad input is noticed):

- Each of ``input_urls`` is downloaded when the task is created, concurrently, after the rate
  limiter admitted the request (so a refused create still used its slot) and after the body
  passed validation. It must answer 200 and be a JPEG, PNG or WebP (magic bytes) of at most
  10,000,000 bytes ("at most 10 MB each", read as decimal megabytes, the stricter reading).
- A bad input refuses the create with code 422 and nothing charged (``input_rejection =
  "create"``, the default); ``input_rejection = "task"`` instead creates (and charges) the task
  and lets it end in ``fail`` with failCode "422" and the reason as failMsg.
- An image-to-image task whose script keeps the default image produces ``I2I_RESULT_PNG``
  (orange instead of blue), so tests can tell which model made a delivered file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import copy
import dataclasses
import datetime
import hashlib
import hmac
import itertools
import json
import secrets
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeGuard

import aiohttp
from aiohttp import web
from multidict import MultiDictProxy
from yarl import URL

# --- the documented contract -------------------------------------------------------------------

FINAL_STATES: Final = frozenset({"success", "fail"})
ASPECT_RATIOS: Final = frozenset({"1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3"})
RESOLUTIONS: Final = frozenset({"1K", "2K"})
PROMPT_MIN: Final = 3
PROMPT_MAX: Final = 5000
INPUT_URLS_MAX: Final = 8
FRESH_URL_TTL: Final = 20 * 60.0  # download-url links are documented as valid for 20 minutes
INPUT_IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/webp"})
INPUT_IMAGE_MAX_BYTES: Final = 10_000_000  # "at most 10 MB each" (decimal: the stricter reading)
# The upload host's documented numbers: "recommended maximum file size is 100MB", "download
# timeout is 30 seconds", files "automatically deleted after 3 days".
UPLOAD_MAX_BYTES: Final = 100_000_000
UPLOAD_FETCH_TIMEOUT: Final = 30.0
UPLOAD_TTL: Final = 3 * 24 * 3600.0
# aiohttp refuses bodies over 1 MiB by default; a base64 upload of the largest file is 4/3 of it.
_BODY_LIMIT: Final = 2 * UPLOAD_MAX_BYTES


@dataclass(frozen=True)
class ModelSpec:
    image_to_image: bool
    cost_1k: int
    cost_2k: int

    def cost(self, resolution: str) -> int:
        return self.cost_2k if resolution == "2K" else self.cost_1k


MODELS: Final[Mapping[str, ModelSpec]] = MappingProxyType(
    {
        "flux-2/flex-text-to-image": ModelSpec(image_to_image=False, cost_1k=14, cost_2k=24),
        "flux-2/flex-image-to-image": ModelSpec(image_to_image=True, cost_1k=14, cost_2k=24),
        "flux-2/pro-text-to-image": ModelSpec(image_to_image=False, cost_1k=5, cost_2k=7),
        "flux-2/pro-image-to-image": ModelSpec(image_to_image=True, cost_1k=5, cost_2k=7),
    }
)

DEFAULT_MESSAGES: Final[Mapping[int, str]] = MappingProxyType(
    {
        200: "success",
        401: "You do not have access permissions",
        402: "Credits insufficient",
        404: "Not found",
        422: "Validation error",
        429: "Rate limited, please try again later",
        433: "Sub-key usage limit reached",
        455: "Service is under maintenance",
        500: "Internal server error",
        501: "Generation failed",
        505: "Feature disabled",
    }
)

UPLOAD_MESSAGES: Final[Mapping[int, str]] = MappingProxyType(
    {
        200: "File uploaded successfully",
        400: "Request parameter error",
        401: "Unauthorized access",
        500: "Internal server error",
    }
)

_EXTENSIONS: Final[Mapping[str, str]] = MappingProxyType(
    {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
)


def sniff_image(data: bytes) -> str | None:
    """The image MIME type the magic bytes announce, or None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def make_png(width: int = 4, height: int = 4, rgb: tuple[int, int, int] = (40, 120, 220)) -> bytes:
    """A valid, uncompressed-colour RGB PNG, built by hand so the fake needs no Pillow."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    row = b"\x00" + bytes(rgb) * width  # filter byte 0 then the pixels
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


TINY_PNG: Final = make_png()
I2I_RESULT_PNG: Final = make_png(rgb=(230, 120, 30))  # what image-to-image tasks produce


# --- scripting and recording ---------------------------------------------------------------------


@dataclass
class TaskScript:
    """How one task created on the fake behaves."""

    # States the task walks through; the last one is final ("success" or "fail"). Non-final
    # states may be anything, so clients can be tested against states they do not know.
    states: list[str] = field(default_factory=lambda: ["waiting", "generating", "success"])
    step_seconds: float = 0.05  # time spent in each non-final state (loop clock)
    image: bytes = TINY_PNG
    content_type: str = "image/png"
    fail_code: str = "500"  # used when the final state is "fail"
    fail_msg: str = "Internal error"
    download_status: int = 200  # status the direct file URL answers (404: expired URL)
    result_url_count: int = 1
    # Extras beyond the brief, for shapes the notes say clients must tolerate:
    callback_times: int = 1  # the same task "may be called back more than once"
    # Where the callback goes instead of callBackUrl's own scheme, host and port (its path
    # kept): a load balancer in front of several bot processes that picked another one.
    callback_base: str | None = None
    param_input_as_string: bool = False  # `param`'s "input" "may itself be a JSON string"
    result_json_as_object: bool = False  # resultJson as an object instead of a JSON string

    def __post_init__(self) -> None:
        if not self.states or self.states[-1] not in FINAL_STATES:
            raise ValueError(f"last state must be one of {sorted(FINAL_STATES)}: {self.states}")
        if any(state in FINAL_STATES for state in self.states[:-1]):
            raise ValueError(f"only the last state may be final: {self.states}")
        if self.step_seconds < 0 or self.result_url_count < 1 or self.callback_times < 0:
            raise ValueError("step_seconds >= 0, result_url_count >= 1, callback_times >= 0")

    @property
    def duration(self) -> float:
        """Seconds from creation to the final state."""
        return self.step_seconds * (len(self.states) - 1)

    def state_index(self, elapsed: float) -> int:
        if self.step_seconds <= 0:
            return len(self.states) - 1
        return min(int(elapsed / self.step_seconds), len(self.states) - 1)


@dataclass
class CreateFault:
    """Injected answer for the next createTask (or recordInfo) call.

    ``code == 200`` with no ``body``, no ``drop_connection`` and no ``creates_task`` is a pure
    delay: the request is then handled normally after ``delay`` seconds.
    """

    code: int  # envelope code: 401, 402, 404, 422, 429, 433, 455, 500, 501, 505
    msg: str = ""  # empty: the usual message for `code`
    http_status: int = 200
    body: str | None = None  # raw body sent instead of the envelope (malformed responses)
    drop_connection: bool = False  # close the socket without answering
    delay: float = 0.0  # answer (or drop) after this many seconds
    creates_task: bool = False  # createTask only: the task really is created before the answer


@dataclass
class RecordedCall:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case keys
    json: Any  # parsed JSON body or None
    status: int  # HTTP status answered; 0 when the connection was dropped
    code: int | None  # envelope code answered, if any
    at: float  # loop.time() at receipt
    # multipart/form-data bodies: text fields as str, files as {"filename", "content_type"}
    form: dict[str, Any] | None = None


@dataclass
class FetchRecord:
    """One download the fake made itself (a ``fileUrl`` or an image-to-image input)."""

    url: str
    purpose: Literal["upload", "input"]
    status: int = 0  # HTTP status the source answered; 0 when it never answered
    size: int = 0  # bytes received
    error: str = ""  # why the file was refused; empty when it was usable


@dataclass
class FakeUpload:
    """One file stored by the upload host."""

    source: str  # the fileUrl, "stream" or "base64"
    data: bytes
    upload_path: str
    file_name: str
    file_path: str  # upload_path/file_name; a later upload to the same path replaces this one
    mime_type: str
    download_url: str
    uploaded_at: float  # loop clock
    expires_at: float  # loop clock


@dataclass
class FakeTask:
    task_id: str
    model: str
    input: dict[str, Any]
    callback_url: str | None
    script: TaskScript
    created_at: float  # loop clock, drives the state machine
    create_time_ms: int  # wall clock, what the API reports
    body: dict[str, Any]  # the createTask request body as received
    cost: int
    result_urls: list[str]
    # The downloaded input_urls, in order (image-to-image tasks whose inputs were all usable).
    input_images: list[bytes] = field(default_factory=list)
    api_key: str | None = None  # the key that created it (None: tasks made outside a request)

    @property
    def input_urls(self) -> list[str]:
        return list(self.input.get("input_urls") or [])

    def state_at(self, now: float) -> str:
        return self.script.states[self.script.state_index(now - self.created_at)]

    @property
    def state(self) -> str:
        return self.state_at(_now())

    @property
    def done_at(self) -> float:
        """Loop time at which the task reaches its final state."""
        return self.created_at + self.script.duration

    @property
    def complete_time_ms(self) -> int:
        return self.create_time_ms + round(self.script.duration * 1000)

    def update_time_ms(self, now: float) -> int:
        index = self.script.state_index(now - self.created_at)
        return self.create_time_ms + round(index * self.script.step_seconds * 1000)

    def param(self) -> str:
        body = dict(self.body)
        if self.script.param_input_as_string and "input" in body:
            body["input"] = json.dumps(body["input"])
        return json.dumps(body)

    def result_json(self) -> str | dict[str, Any]:
        result = {"resultUrls": list(self.result_urls)}
        return result if self.script.result_json_as_object else json.dumps(result)


@dataclass
class FakeAccount:
    """Another kie.ai account: its key's own balance, rate-limit windows and violations."""

    api_key: str
    credits: float
    submit_violations: int = 0
    query_violations: int = 0
    submit_times: collections.deque[float] = field(default_factory=collections.deque)
    query_times: collections.deque[float] = field(default_factory=collections.deque)


def _now() -> float:
    # The default loop's clock is time.monotonic(); fall back to it outside a loop.
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


@dataclass(frozen=True)
class _Rejection:
    code: int
    msg: str


class _FetchFailed(Exception):
    """A file the fake was asked to download could not be downloaded."""


_CALL: Final = web.RequestKey("kie_call", RecordedCall)
_DROPPED: Final = web.RequestKey("kie_dropped", bool)
_FORM: Final = web.RequestKey("kie_form", MultiDictProxy[Any])


# --- the fake service ----------------------------------------------------------------------------


class FakeKie:
    """A kie.ai look-alike on 127.0.0.1:<random port>. Use ``async with`` or start()/stop()."""

    def __init__(
        self,
        *,
        api_key: str = "test-kie-key",
        credits: float = 1000.0,
        submit_limit: int = 20,
        submit_window: float = 10.0,
        query_limit: int = 10,
        query_window: float = 1.0,
        rate_limit_http_status: int = 429,
    ) -> None:
        self.api_key = api_key
        self.credits = credits
        self.submit_limit = submit_limit
        self.submit_window = submit_window
        self.query_limit = query_limit
        self.query_window = query_window
        self.rate_limit_http_status = rate_limit_http_status
        # Raw text for real rate-limit rejections instead of the envelope (the notes say a
        # limiter's 429 may have a non-JSON body).
        self.rate_limit_body: str | None = None
        self.auth_http_status = 200  # see the module docstring
        self.webhook_hmac_key: str | None = None
        self.callback_timeout = 5.0  # read by start(); a slow receiver delays stop() this long
        self.default_script = TaskScript()
        # While set, kie.ai is down: every API call (``/api/...``: tasks, status, credits,
        # uploads) is answered with this fault, before any other fault or rule applies.
        self.outage: CreateFault | None = None
        # Image-to-image inputs and the upload host; see the module docstring.
        self.input_rejection: Literal["create", "task"] = "create"
        self.input_image_max_bytes = INPUT_IMAGE_MAX_BYTES
        self.upload_max_bytes = UPLOAD_MAX_BYTES
        self.upload_images_only = False
        self.upload_errors_use_http_status = True
        self.upload_ttl = UPLOAD_TTL
        self.fetch_timeout = UPLOAD_FETCH_TIMEOUT

        self.base_url = ""
        self.calls: list[RecordedCall] = []
        self.tasks: dict[str, FakeTask] = {}
        # (task_id, HTTP status the receiver answered); status 0 when it never answered.
        self.callbacks_sent: list[tuple[str, int]] = []
        self.submit_violations = 0
        self.query_violations = 0
        self.uploads: list[FakeUpload] = []  # every stored file, overwritten ones included
        self.fetches: list[FetchRecord] = []
        self.accounts: dict[str, FakeAccount] = {}  # the other keys (see `add_account`)

        self._scripts: collections.deque[TaskScript] = collections.deque()
        self._create_faults: collections.deque[CreateFault] = collections.deque()
        self._query_faults: collections.deque[CreateFault] = collections.deque()
        self._upload_faults: collections.deque[CreateFault] = collections.deque()
        self._stored: dict[str, FakeUpload] = {}  # file_path -> the latest upload there
        # Stands for the per-account "xxx" directory of documented download URLs.
        self._account_dir = hashlib.sha256(api_key.encode()).hexdigest()[:12]
        self._submit_times: collections.deque[float] = collections.deque()
        # Tasks whose generated media kie.ai has deleted ("media deleted after 14 days").
        self._media_deleted: set[str] = set()
        self._query_times: collections.deque[float] = collections.deque()
        self._fresh_links: dict[str, tuple[str, int, float]] = {}  # token -> task, n, expiry
        self._sequence = itertools.count(1)
        self._callback_jobs: dict[asyncio.Task[None], FakeTask] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping: asyncio.Event | None = None
        self._task_created = asyncio.Event()

    # -- lifecycle --

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._record], client_max_size=_BODY_LIMIT)
        app.router.add_post("/api/v1/jobs/createTask", self._handle_create)
        app.router.add_get("/api/v1/jobs/recordInfo", self._handle_record_info)
        app.router.add_post("/api/v1/common/download-url", self._handle_download_url)
        app.router.add_get("/api/v1/chat/credit", self._handle_credit)
        app.router.add_get("/files/{task_id}/{name}", self._handle_file)
        app.router.add_post("/api/file-url-upload", self._handle_url_upload)
        app.router.add_post("/api/file-stream-upload", self._handle_stream_upload)
        app.router.add_post("/api/file-base64-upload", self._handle_base64_upload)
        app.router.add_get("/tempfile/{account}/{file_path:.+}", self._handle_uploaded_file)
        # Short shutdown: a delayed or dropped request must not hold stop() for a minute.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.callback_timeout)
        )

    async def stop(self) -> None:
        if self._runner is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        now = _now()
        for job, task in list(self._callback_jobs.items()):
            if task.done_at > now:  # not due yet: it would never have been sent
                job.cancel()
        if self._callback_jobs:
            await asyncio.gather(*self._callback_jobs, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> FakeKie:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- test-facing helpers --

    def add_account(self, api_key: str, credits: float = 1000.0) -> FakeAccount:
        """Another valid key, with its own balance and its own rate limits."""
        account = FakeAccount(api_key, credits)
        self.accounts[api_key] = account
        return account

    def _account(self, request: web.Request) -> FakeAccount | None:
        """The other account whose key the request carries; None: the first account's."""
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        return self.accounts.get(token.strip())

    def script_next(self, *scripts: TaskScript) -> None:
        """Queue scripts for the next created tasks, in order."""
        self._scripts.extend(scripts)

    def delete_media(self, *task_ids: str) -> None:
        """Delete these tasks' generated files (every task's, with none given), as kie.ai does
        14 days on: their links answer 404 and ``download-url`` no longer knows them."""
        self._media_deleted.update(task_ids or self.tasks)

    def fail_create_next(self, *faults: CreateFault) -> None:
        self._create_faults.extend(faults)

    def fail_query_next(self, *faults: CreateFault) -> None:
        self._query_faults.extend(faults)

    def fail_upload_next(self, *faults: CreateFault) -> None:
        """Faults for the next upload calls (any of the three). An envelope fault answers with
        the upload host's envelope; its HTTP status follows ``upload_errors_use_http_status``
        unless the fault sets a non-200 ``http_status``."""
        self._upload_faults.extend(faults)

    @property
    def upload_base_url(self) -> str:
        """Where the bot's upload host setting should point: the fake serves both."""
        return self.base_url

    def stored_file(self, download_url: str) -> FakeUpload | None:
        """The upload a ``downloadUrl`` currently serves, if any."""
        url = str(URL(download_url).with_query(None))
        return next((up for up in self._stored.values() if up.download_url == url), None)

    @property
    def violations(self) -> int:
        others = sum(a.submit_violations + a.query_violations for a in self.accounts.values())
        return self.submit_violations + self.query_violations + others

    def created_tasks(self) -> list[FakeTask]:
        return list(self.tasks.values())

    def calls_to(self, path_suffix: str) -> list[RecordedCall]:
        return [call for call in self.calls if call.path.endswith(path_suffix)]

    # The name `timeout` is part of the agreed API, hence the noqa.
    async def wait_for_tasks(self, n: int, timeout: float = 10) -> None:
        """Return once at least `n` tasks exist; TimeoutError after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.tasks) < n:
                    self._task_created.clear()
                    await self._task_created.wait()
        except TimeoutError:
            raise TimeoutError(f"{len(self.tasks)} of {n} tasks created in {timeout}s") from None

    # -- plumbing --

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Record every request, including the ones a fault or the limiter answered."""
        call = RecordedCall(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={key.lower(): value for key, value in request.headers.items()},
            json=None,
            status=0,
            code=None,
            at=_now(),
        )
        self.calls.append(call)
        request[_CALL] = call
        try:
            if request.content_type == "multipart/form-data":
                # Parsed here because the body can be read only once.
                with contextlib.suppress(ValueError):  # malformed: the handler refuses it
                    form = await request.post()
                    request[_FORM] = form
                    call.form = _describe_form(form)
            else:
                raw = await request.read()
                with contextlib.suppress(ValueError):
                    call.json = json.loads(raw) if raw else None
            outage = self.outage
            if outage is not None and request.path.startswith("/api/"):
                response: web.StreamResponse = await self._answer_fault(request, outage)
            else:
                response = await handler(request)
        except web.HTTPException as exc:
            call.status = exc.status
            raise
        call.status = 0 if request.get(_DROPPED) else response.status
        return response

    def _reply(
        self, request: web.Request, code: int, data: Any = None, msg: str = "", status: int = 200
    ) -> web.Response:
        request[_CALL].code = code
        body = {"code": code, "msg": msg or DEFAULT_MESSAGES.get(code, "error"), "data": data}
        return web.json_response(body, status=status)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() in self.accounts:
            return True
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    def _unauthorized(self, request: web.Request) -> web.Response:
        return self._reply(request, 401, status=self.auth_http_status)

    def _rate_limited(self, request: web.Request) -> web.Response:
        if self.rate_limit_body is not None:
            return web.Response(text=self.rate_limit_body, status=self.rate_limit_http_status)
        return self._reply(request, 429, status=self.rate_limit_http_status)

    @staticmethod
    def _admit(times: collections.deque[float], limit: int, window: float, now: float) -> bool:
        """Sliding window: admit if fewer than `limit` admissions in the last `window` seconds."""
        while times and times[0] < now - window:  # strict: equal age still counts
            times.popleft()
        if len(times) >= limit:
            return False
        times.append(now)
        return True

    async def _pause(self, seconds: float) -> None:
        # Cut short by stop() so a long injected delay never blocks teardown.
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _answer_fault(
        self, request: web.Request, fault: CreateFault, task: FakeTask | None = None
    ) -> web.StreamResponse:
        if fault.delay > 0:
            await self._pause(fault.delay)
        if fault.drop_connection:
            request[_DROPPED] = True
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client
        if fault.body is not None:
            kind = "text/html" if fault.body.lstrip().startswith("<") else "text/plain"
            return web.Response(text=fault.body, status=fault.http_status, content_type=kind)
        data = {"taskId": task.task_id} if task is not None and fault.code == 200 else None
        return self._reply(request, fault.code, data, fault.msg, fault.http_status)

    @staticmethod
    def _is_pure_delay(fault: CreateFault) -> bool:
        return (
            fault.code == 200
            and fault.body is None
            and not fault.drop_connection
            and not fault.creates_task
        )

    # -- createTask --

    async def _handle_create(self, request: web.Request) -> web.StreamResponse:
        # Injected faults come first: they model failures in front of the service.
        if self._create_faults:
            fault = self._create_faults.popleft()
            if self._is_pure_delay(fault):
                await self._pause(fault.delay)
                return await self._create(request)
            task = None
            if fault.creates_task and self._authorized(request):
                # The request did reach the service, so its limits and rules apply.
                outcome = await self._admit_and_create(request)
                task = outcome if isinstance(outcome, FakeTask) else None
            return await self._answer_fault(request, fault, task)
        return await self._create(request)

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        outcome = await self._admit_and_create(request)
        if outcome is None:
            return self._rate_limited(request)
        if isinstance(outcome, _Rejection):
            return self._reply(request, outcome.code, msg=outcome.msg)
        return self._reply(request, 200, {"taskId": outcome.task_id})

    async def _admit_and_create(self, request: web.Request) -> FakeTask | _Rejection | None:
        """None when rate limited (counted as a violation, per account)."""
        account = self._account(request)
        times = self._submit_times if account is None else account.submit_times
        if not self._admit(times, self.submit_limit, self.submit_window, _now()):
            if account is None:
                self.submit_violations += 1
            else:
                account.submit_violations += 1
            return None
        try:
            body = json.loads(await request.text())
        except ValueError:
            return _Rejection(422, "Request body must be valid JSON")
        rejection = validate_create_body(body)
        if rejection is not None:
            return rejection
        spec = MODELS[body["model"]]
        inputs: list[bytes] | str = []
        if spec.image_to_image:
            inputs = await self._fetch_inputs(body["input"]["input_urls"])
            if isinstance(inputs, str) and self.input_rejection == "create":
                return _Rejection(422, inputs)
        cost = spec.cost(body["input"]["resolution"])
        balance = self.credits if account is None else account.credits
        if balance < cost:
            return _Rejection(402, DEFAULT_MESSAGES[402])
        if account is None:
            self.credits -= cost
        else:
            account.credits -= cost
        key = self.api_key if account is None else account.api_key
        if isinstance(inputs, str):
            return self._new_task(body, cost, input_failure=inputs, api_key=key)
        return self._new_task(body, cost, input_images=inputs, api_key=key)

    async def _fetch_inputs(self, urls: list[str]) -> list[bytes] | str:
        """The input images, or why the service would refuse them."""
        results = await asyncio.gather(*(self._fetch_input(url) for url in urls))
        for index, result in enumerate(results):
            if isinstance(result, str):
                return f"input_urls[{index}] {result}"
        return [result for result in results if isinstance(result, bytes)]

    async def _fetch_input(self, url: str) -> bytes | str:
        record = FetchRecord(url=url, purpose="input")
        try:
            data, _ = await self._fetch(record, self.input_image_max_bytes)
        except _FetchFailed as exc:
            return f"could not be downloaded: {exc}"
        if sniff_image(data) not in INPUT_IMAGE_TYPES:
            record.error = "not a JPEG, PNG or WebP image"
            return f"is {record.error}"
        return data

    def _new_task(
        self,
        body: dict[str, Any],
        cost: int,
        *,
        input_images: list[bytes] | None = None,
        input_failure: str | None = None,
        api_key: str | None = None,
    ) -> FakeTask:
        # Snapshot the default so later edits by a test do not rewrite running tasks.
        script = self._scripts.popleft() if self._scripts else copy.deepcopy(self.default_script)
        if MODELS[body["model"]].image_to_image and script.image == TINY_PNG:
            script = dataclasses.replace(script, image=I2I_RESULT_PNG)
        if input_failure is not None:
            script = dataclasses.replace(
                script,
                states=[*script.states[:-1], "fail"],
                fail_code="422",
                fail_msg=input_failure,
            )
        create_time_ms = int(time.time() * 1000)
        task_id = f"task_flux-2_{create_time_ms}{next(self._sequence):04d}"
        ext = _EXTENSIONS.get(script.content_type.split(";")[0].strip(), "bin")
        task = FakeTask(
            task_id=task_id,
            model=body["model"],
            input=body["input"],
            callback_url=body.get("callBackUrl"),
            script=script,
            created_at=_now(),
            create_time_ms=create_time_ms,
            body=body,
            cost=cost,
            result_urls=[
                f"{self.base_url}/files/{task_id}/{n}.{ext}" for n in range(script.result_url_count)
            ],
            input_images=input_images or [],
            api_key=api_key,
        )
        self.tasks[task_id] = task
        self._task_created.set()
        if task.callback_url:
            job = asyncio.create_task(self._callback_job(task))
            self._callback_jobs[job] = task
            job.add_done_callback(self._callback_jobs.pop)
        return task

    # -- recordInfo --

    async def _handle_record_info(self, request: web.Request) -> web.StreamResponse:
        if self._query_faults:
            fault = self._query_faults.popleft()
            if not self._is_pure_delay(fault):
                return await self._answer_fault(request, fault)
            await self._pause(fault.delay)
        if not self._authorized(request):
            return self._unauthorized(request)
        now = _now()
        account = self._account(request)
        times = self._query_times if account is None else account.query_times
        if not self._admit(times, self.query_limit, self.query_window, now):
            if account is None:
                self.query_violations += 1
            else:
                account.query_violations += 1
            return self._rate_limited(request)
        task_id = request.query.get("taskId", "")
        if not task_id:
            return self._reply(request, 422, msg="taskId is required")
        task = self.tasks.get(task_id)
        key = self.api_key if account is None else account.api_key
        if task is None or (task.api_key is not None and task.api_key != key):
            return self._reply(request, 404, msg="recordInfo is null")
        return self._reply(request, 200, self.record_info(task, now))

    @staticmethod
    def record_info(task: FakeTask, now: float) -> dict[str, Any]:
        """The ``data`` of a recordInfo answer for `task` at loop time `now`."""
        state = task.state_at(now)
        final = state in FINAL_STATES
        failed = state == "fail"
        return {
            "taskId": task.task_id,
            "model": task.model,
            "state": state,
            "param": task.param(),
            "resultJson": task.result_json() if state == "success" else "",
            "failCode": task.script.fail_code if failed else "",
            "failMsg": task.script.fail_msg if failed else "",
            "costTime": round(task.script.duration * 1000) if final else 0,  # milliseconds
            "completeTime": task.complete_time_ms if final else None,
            "createTime": task.create_time_ms,
            "updateTime": task.update_time_ms(now),
        }

    # -- callbacks --

    async def _callback_job(self, task: FakeTask) -> None:
        await asyncio.sleep(max(0.0, task.done_at - _now()))
        for _ in range(task.script.callback_times):
            await self._send_callback(task)

    def callback_body(self, task: FakeTask) -> dict[str, Any]:
        """The documented callback body for a finished task."""
        success = task.script.states[-1] == "success"
        return {
            "code": 200 if success else 501,
            "msg": "Playground task completed successfully."
            if success
            else "Playground task failed.",
            "data": {
                "taskId": task.task_id,
                "model": task.model,
                "state": task.script.states[-1],
                "param": task.param(),
                "resultJson": task.result_json() if success else "",
                "failCode": None if success else task.script.fail_code,
                "failMsg": None if success else task.script.fail_msg,
                "costTime": round(task.script.duration),  # seconds here, unlike recordInfo
                "completeTime": task.complete_time_ms,
                "createTime": task.create_time_ms,
                "updateTime": task.complete_time_ms,
                "creditsConsumed": task.cost,
            },
        }

    def sign(self, task_id: str, timestamp: str) -> str:
        """base64(HMAC-SHA256(webhook_hmac_key, taskId + "." + timestamp))."""
        assert self.webhook_hmac_key is not None
        digest = hmac.new(
            self.webhook_hmac_key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256
        ).digest()
        return base64.b64encode(digest).decode()

    async def _send_callback(self, task: FakeTask) -> None:
        assert self._session is not None and task.callback_url is not None
        headers = {}
        if self.webhook_hmac_key is not None:
            timestamp = str(int(time.time()))
            headers = {
                "X-Webhook-Timestamp": timestamp,
                "X-Webhook-Signature": self.sign(task.task_id, timestamp),
            }
        url = task.callback_url
        if task.script.callback_base is not None:
            url = task.script.callback_base.rstrip("/") + str(URL(url).raw_path_qs)
        status = 0
        # Why broad: a receiver that is down, slow or broken must never crash the fake.
        with contextlib.suppress(Exception):
            async with self._session.post(
                url, json=self.callback_body(task), headers=headers
            ) as response:
                await response.read()
                status = response.status
        self.callbacks_sent.append((task.task_id, status))

    # -- files, download-url, credit --

    async def _handle_file(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["task_id"])
        index, _, ext = request.match_info["name"].partition(".")
        if (
            task is None
            or task.task_id in self._media_deleted
            or task.state_at(_now()) != "success"
            or not index.isdigit()
            or int(index) >= len(task.result_urls)
            or not task.result_urls[int(index)].endswith(f"/{index}.{ext}")
        ):
            return web.Response(status=404, text="Not Found")
        token = request.query.get("fresh")
        if token is not None:
            link = self._fresh_links.get(token)
            if link is None or link[:2] != (task.task_id, int(index)) or link[2] < _now():
                return web.Response(status=403, text="Link expired")
        elif task.script.download_status != 200:
            return web.Response(status=task.script.download_status, text="Unavailable")
        return web.Response(
            body=task.script.image, headers={"Content-Type": task.script.content_type}
        )

    async def _handle_download_url(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        body = request[_CALL].json
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            return self._reply(request, 422, msg="url is required")
        account = self._account(request)
        key = self.api_key if account is None else account.api_key
        for task in self.tasks.values():
            if task.task_id in self._media_deleted or task.api_key not in (None, key):
                continue
            for n, result_url in enumerate(task.result_urls):
                if URL(url).with_query(None) == URL(result_url):
                    token = secrets.token_urlsafe(12)
                    self._fresh_links[token] = (task.task_id, n, _now() + FRESH_URL_TTL)
                    return self._reply(request, 200, f"{result_url}?fresh={token}")
        return self._reply(request, 422, msg="url is not a generated file of this account")

    async def _handle_credit(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        account = self._account(request)
        credits = self.credits if account is None else account.credits
        return self._reply(request, 200, int(credits) if float(credits).is_integer() else credits)

    # -- outgoing downloads --

    async def _fetch(self, record: FetchRecord, limit: int) -> tuple[bytes, str]:
        """GET ``record.url`` as the real service would: the body and its declared type.

        Records the attempt in ``fetches``; _FetchFailed says why the file is unusable.
        """
        self.fetches.append(record)
        try:
            return await self._download(record, limit)
        except _FetchFailed as exc:
            record.error = str(exc)
            raise

    async def _download(self, record: FetchRecord, limit: int) -> tuple[bytes, str]:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
        too_large = f"the file is larger than {limit} bytes"
        try:
            async with self._session.get(record.url, timeout=timeout) as response:
                record.status = response.status
                if response.status != 200:
                    raise _FetchFailed(f"the server answered HTTP {response.status}")
                if (response.content_length or 0) > limit:
                    raise _FetchFailed(too_large)
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data.extend(chunk)
                    record.size = len(data)
                    if len(data) > limit:
                        raise _FetchFailed(too_large)
                return bytes(data), response.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _FetchFailed(f"the download failed ({type(exc).__name__})") from None

    # -- the upload host --

    def _upload_reply(
        self, request: web.Request, code: int, data: Any = None, msg: str = "", status: int = 200
    ) -> web.Response:
        request[_CALL].code = code
        if status == 200 and code != 200 and self.upload_errors_use_http_status:
            status = code if 400 <= code <= 599 else 500
        body = {
            "success": code == 200,
            "code": code,
            "msg": msg or UPLOAD_MESSAGES.get(code, DEFAULT_MESSAGES.get(code, "error")),
            "data": data,
        }
        return web.json_response(body, status=status)

    async def _upload_preamble(self, request: web.Request) -> web.StreamResponse | None:
        """Injected faults, then auth; None when the upload may go ahead."""
        if self._upload_faults:
            fault = self._upload_faults.popleft()
            if fault.body is not None or fault.drop_connection:
                return await self._answer_fault(request, fault)
            await self._pause(fault.delay)
            if not self._is_pure_delay(fault):
                return self._upload_reply(
                    request, fault.code, msg=fault.msg, status=fault.http_status
                )
        if not self._authorized(request):
            return self._upload_reply(request, 401)
        return None

    async def _handle_url_upload(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._upload_preamble(request)) is not None:
            return early
        body = request[_CALL].json
        if not isinstance(body, dict):
            return self._upload_reply(request, 400, msg="Request body must be a JSON object")
        file_url = body.get("fileUrl")
        if not isinstance(file_url, str) or not _is_http_url(file_url):
            return self._upload_reply(request, 400, msg="fileUrl must be an http(s) URL")
        target = _upload_target(body.get("uploadPath"), body.get("fileName"))
        if isinstance(target, _Rejection):
            return self._upload_reply(request, target.code, msg=target.msg)
        upload_path, file_name = target
        record = FetchRecord(url=file_url, purpose="upload")
        try:
            data, declared = await self._fetch(record, self.upload_max_bytes)
        except _FetchFailed as exc:
            return self._upload_reply(request, 400, msg=f"Failed to download file: {exc}")
        if not file_name and _valid_file_name(URL(file_url).name):
            file_name = URL(file_url).name  # documented: "extracts filenames from URLs"
        return self._store(request, file_url, data, declared, upload_path, file_name)

    async def _handle_stream_upload(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._upload_preamble(request)) is not None:
            return early
        form = request.get(_FORM)
        if form is None:
            return self._upload_reply(request, 400, msg="Body must be multipart/form-data")
        part = form.get("file")
        original = ""
        if isinstance(part, web.FileField):
            data = await asyncio.to_thread(part.file.read)  # may be spooled to disk
            declared, original = part.content_type, part.filename or ""
        elif isinstance(part, bytes | bytearray):
            data, declared = bytes(part), ""
        else:
            return self._upload_reply(request, 400, msg="file is required")
        target = _upload_target(form.get("uploadPath"), form.get("fileName"))
        if isinstance(target, _Rejection):
            return self._upload_reply(request, target.code, msg=target.msg)
        upload_path, file_name = target
        if not file_name and _valid_file_name(original):
            file_name = original
        return self._store(request, "stream", data, declared, upload_path, file_name)

    async def _handle_base64_upload(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._upload_preamble(request)) is not None:
            return early
        body = request[_CALL].json
        if not isinstance(body, dict):
            return self._upload_reply(request, 400, msg="Request body must be a JSON object")
        encoded = body.get("base64Data")
        if not isinstance(encoded, str) or not encoded:
            return self._upload_reply(request, 400, msg="base64Data is required")
        declared = ""
        if encoded.startswith("data:"):  # documented: a data URL works too
            header, _, encoded = encoded.partition(",")
            declared = header.removeprefix("data:").split(";")[0]
        try:
            data = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            return self._upload_reply(request, 400, msg="base64Data is not valid Base64")
        target = _upload_target(body.get("uploadPath"), body.get("fileName"))
        if isinstance(target, _Rejection):
            return self._upload_reply(request, target.code, msg=target.msg)
        return self._store(request, "base64", data, declared, *target)

    def _store(
        self,
        request: web.Request,
        source: str,
        data: bytes,
        declared_type: str,
        upload_path: str,
        file_name: str,
    ) -> web.Response:
        if not data:
            return self._upload_reply(request, 400, msg="The file is empty")
        if len(data) > self.upload_max_bytes:
            return self._upload_reply(
                request, 400, msg=f"File size exceeds the limit of {self.upload_max_bytes} bytes"
            )
        declared = declared_type.split(";")[0].strip().lower()
        mime_type = sniff_image(data) or declared or "application/octet-stream"
        if self.upload_images_only and not mime_type.startswith("image/"):
            return self._upload_reply(request, 400, msg="Only image files are accepted")
        if not file_name:  # documented: "a random file name will be automatically generated"
            file_name = f"{secrets.token_hex(8)}.{_EXTENSIONS.get(mime_type, 'bin')}"
        file_path = f"{upload_path}/{file_name}"
        now = _now()
        upload = FakeUpload(
            source=source,
            data=data,
            upload_path=upload_path,
            file_name=file_name,
            file_path=file_path,
            mime_type=mime_type,
            download_url=str(
                URL(self.base_url).joinpath("tempfile", self._account_dir, *file_path.split("/"))
            ),
            uploaded_at=now,
            expires_at=now + self.upload_ttl,
        )
        self.uploads.append(upload)
        self._stored[file_path] = upload
        uploaded_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        data_out = {
            "fileName": file_name,
            "filePath": file_path,
            "downloadUrl": upload.download_url,
            "fileSize": len(data),
            "mimeType": mime_type,
            "uploadedAt": uploaded_at.replace("+00:00", "Z"),
        }
        return self._upload_reply(request, 200, data_out)

    async def _handle_uploaded_file(self, request: web.Request) -> web.Response:
        upload = self._stored.get(request.match_info["file_path"])
        if (
            request.match_info["account"] != self._account_dir
            or upload is None
            or upload.expires_at < _now()
        ):
            return web.Response(status=404, text="Not Found")
        return web.Response(body=upload.data, headers={"Content-Type": upload.mime_type})


# --- validation ----------------------------------------------------------------------------------


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def _valid_file_name(name: object) -> TypeGuard[str]:
    return (
        isinstance(name, str)
        and bool(name)
        and name not in (".", "..")
        and not any(c in name for c in "/\\")
    )


def _upload_target(upload_path: object, file_name: object) -> tuple[str, str] | _Rejection:
    """The normalised (uploadPath, fileName) of an upload; fileName "" when not given."""
    if not isinstance(upload_path, str) or not upload_path.strip("/"):
        return _Rejection(400, "uploadPath is required")
    segments = upload_path.strip("/").split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return _Rejection(400, "uploadPath is not a valid path")
    if file_name is None or file_name == "":
        return "/".join(segments), ""
    if not _valid_file_name(file_name):
        return _Rejection(400, "fileName is not a valid file name")
    return "/".join(segments), file_name


def _describe_form(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """A multipart body as RecordedCall.form shows it (files by name and type, not bytes)."""
    described: dict[str, Any] = {}
    for name, value in form.items():
        if isinstance(value, web.FileField):
            described[name] = {"filename": value.filename, "content_type": value.content_type}
        elif isinstance(value, bytes | bytearray):
            described[name] = {"filename": None, "content_type": None}
        else:
            described[name] = value
    return described


def validate_create_body(body: Any) -> _Rejection | None:
    """The documented createTask rules; None when the body is acceptable."""
    if not isinstance(body, dict):
        return _Rejection(422, "Request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _Rejection(422, "model is required")
    spec = MODELS.get(model)
    if spec is None:
        return _Rejection(404, f"model {model!r} not found")  # the notes: 404 for unknown models
    callback = body.get("callBackUrl")
    if callback is not None and not _is_http_url(callback):
        return _Rejection(422, "callBackUrl must be an http(s) URL")
    params = body.get("input")
    if not isinstance(params, dict):
        return _Rejection(422, "input is required and must be an object")
    prompt = params.get("prompt")
    if not isinstance(prompt, str):
        return _Rejection(422, "input.prompt is required")
    if not PROMPT_MIN <= len(prompt) <= PROMPT_MAX or not prompt.strip():
        return _Rejection(
            422, f"prompt length must be between {PROMPT_MIN}-{PROMPT_MAX} characters"
        )
    input_urls = params.get("input_urls")
    if spec.image_to_image:
        if (
            not isinstance(input_urls, list)
            or not 1 <= len(input_urls) <= INPUT_URLS_MAX
            or not all(_is_http_url(url) for url in input_urls)
        ):
            return _Rejection(422, f"input_urls must hold 1-{INPUT_URLS_MAX} http(s) image URLs")
    elif input_urls is not None:
        # Stricter than the docs: a text model would silently drop the image, a client bug.
        return _Rejection(422, "input_urls is only accepted by image-to-image models")
    aspect_ratio = params.get("aspect_ratio")
    allowed = ASPECT_RATIOS | {"auto"} if spec.image_to_image else ASPECT_RATIOS
    if not isinstance(aspect_ratio, str) or aspect_ratio not in allowed:
        return _Rejection(422, f"aspect_ratio must be one of {sorted(allowed)}")
    resolution = params.get("resolution")
    if not isinstance(resolution, str) or resolution not in RESOLUTIONS:
        return _Rejection(422, f"resolution must be one of {sorted(RESOLUTIONS)}")
    nsfw_checker = params.get("nsfw_checker")
    if nsfw_checker is not None and not isinstance(nsfw_checker, bool):
        return _Rejection(422, "nsfw_checker must be a boolean")
    return None
