"""The kie.ai HTTP client: task creation, task details, credits and result downloads.

It knows nothing of Discord. It speaks frozen dataclasses and raises one error type per failure
class, keeping "the API call failed" (`KieApiError` and its kin) apart from "the image job failed"
(`TaskFailed`, which is a state of a task, not an exception of a call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import yarl

from bot.netguard import MAX_REDIRECTS, FetchPolicy, UrlRefused
from bot.ratelimit import Grant, SlidingWindowLimiter, Turn

log = logging.getLogger(__name__)

TEXT_TO_IMAGE_MODEL = "flux-2/flex-text-to-image"
IMAGE_TO_IMAGE_MODEL = "flux-2/flex-image-to-image"
AspectRatio = Literal["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "auto"]
Resolution = Literal["1K", "2K"]
ASPECT_RATIOS: tuple[AspectRatio, ...] = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3")
AUTO_ASPECT_RATIO: AspectRatio = "auto"  # image-to-image only: match the reference image
RESOLUTIONS: tuple[Resolution, ...] = ("1K", "2K")
PROMPT_MIN_LENGTH = 3
PROMPT_MAX_LENGTH = 5000
# Image-to-image references: JPEG, PNG or WebP, at most 10 MB each (documented; decimal
# megabytes, the stricter reading), kept by kie.ai's file host for 3 days.
REFERENCE_TYPES = ("image/jpeg", "image/png", "image/webp")
REFERENCE_MAX_BYTES = 10_000_000
REFERENCE_LIFETIME = 3 * 24 * 3600.0

# kie.ai's JSON answers are a few KB; anything far larger is not read whole.
MAX_API_BYTES = 1024 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)

# Documented limits: 20 createTask calls per 10 s per account, 10 recordInfo calls per second.
SUBMIT_LIMIT = (20, 10.0)
QUERY_LIMIT = (10, 1.0)

TaskState = Literal["waiting", "queuing", "generating", "success", "fail"]
FINAL_STATES = frozenset({"success", "fail"})


# --- errors -----------------------------------------------------------------------------------


class KieError(Exception):
    """Base class: a call to kie.ai did not give a usable answer."""

    def __init__(self, message: str, *, code: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason  # kie.ai's own words (`msg`), when it gave any


class KieAuthError(KieError):
    """401: the API key is missing or wrong (an owner problem, not a user one)."""


class KieInsufficientCredits(KieError):
    """402 (or 433, a sub-key's cap): the account cannot pay for more images."""


class KieValidationError(KieError):
    """422 / 404: kie.ai rejected the request itself (prompt, options or model)."""


class KieRateLimited(KieError):
    """429: too many requests; nothing was created."""


class KieMaintenance(KieError):
    """455: the service is under maintenance; nothing was created."""


class KieServerError(KieError):
    """500 / 5xx: the server failed."""


class KieGenerationRejected(KieError):
    """501: the generation failed at submission."""


class KieFeatureDisabled(KieError):
    """505: the feature is currently switched off."""


class KieConnectionError(KieError):
    """The network failed before an answer arrived."""


class KieTimeout(KieError):
    """No answer in time."""


class KieMalformedResponse(KieError):
    """The answer was not the documented envelope."""


class KieSubmitUncertain(KieError):
    """createTask may or may not have reached kie.ai: it must not be sent again."""


class DownloadError(KieError):
    """The finished image could not be fetched."""


_ERRORS_BY_CODE: dict[int, type[KieError]] = {
    401: KieAuthError,
    402: KieInsufficientCredits,
    404: KieValidationError,
    422: KieValidationError,
    429: KieRateLimited,
    433: KieInsufficientCredits,
    455: KieMaintenance,
    500: KieServerError,
    501: KieGenerationRejected,
    505: KieFeatureDisabled,
}

# Rejections after which kie.ai created nothing, so sending the same request again is safe.
_RETRYABLE = (KieRateLimited, KieMaintenance)


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    aspect_ratio: AspectRatio = "1:1"
    resolution: Resolution = "1K"
    # Reference images on kie.ai's file host; any makes it an image-to-image request.
    input_urls: tuple[str, ...] = ()
    # kie.ai's own content filter ("defaults to false": off unless asked for). The bot always
    # sends it, true unless the operator, the server and the channel all allow adult content.
    nsfw_checker: bool = True

    @property
    def model(self) -> str:
        return IMAGE_TO_IMAGE_MODEL if self.input_urls else TEXT_TO_IMAGE_MODEL


@dataclass(frozen=True)
class TaskInfo:
    task_id: str
    state: str
    result_urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_message: str | None = None
    credits: float | None = None  # what the task cost, where kie.ai says so

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "success"


@dataclass(frozen=True)
class DownloadedImage:
    data: bytes
    content_type: str
    url: str


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff for rejections that are safe to retry."""

    attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = min(self.max_delay, self.base_delay * 2**attempt)
        return backoff * random.uniform(0.5, 1.0)


# --- parsing (pure) ---------------------------------------------------------------------------


def build_create_payload(request: ImageRequest, callback_url: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": request.model,
        "input": {
            "prompt": request.prompt,
            "aspect_ratio": request.aspect_ratio,
            "resolution": request.resolution,
            "nsfw_checker": request.nsfw_checker,
        },
    }
    if request.input_urls:
        payload["input"]["input_urls"] = list(request.input_urls)
    if callback_url:
        payload["callBackUrl"] = callback_url
    return payload


def envelope_data(body: Any) -> Any:
    """Return `data` from a success envelope, or raise the error the envelope describes."""
    if not isinstance(body, Mapping) or not isinstance(body.get("code"), int):
        raise KieMalformedResponse("kie.ai answered without a status code")
    code: int = body["code"]
    if code == 200:
        return body.get("data")
    message = str(body.get("msg") or body.get("message") or "")[:300]
    error_type = _ERRORS_BY_CODE.get(code, KieServerError)
    raise error_type(f"kie.ai answered {code}: {message}", code=code, reason=message or None)


def parse_task_id(data: Any) -> str:
    task_id = data.get("taskId") if isinstance(data, Mapping) else None
    if not isinstance(task_id, str) or not task_id:
        raise KieMalformedResponse("createTask answered without a taskId")
    return task_id


def parse_upload_url(data: Any) -> str:
    """The link kie.ai's file host gives an uploaded file (`downloadUrl`; `fileUrl` as well)."""
    url = None
    if isinstance(data, Mapping):
        url = data.get("downloadUrl") or data.get("fileUrl")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise KieMalformedResponse("the file upload answered without a download URL")
    return url


def parse_result_urls(result_json: Any) -> tuple[str, ...]:
    """`resultJson` is documented as a JSON string, but be ready for an object or nothing."""
    if isinstance(result_json, str):
        if not result_json.strip():
            return ()
        try:
            result_json = json.loads(result_json)
        except ValueError:
            return ()
    if not isinstance(result_json, Mapping):
        return ()
    urls = result_json.get("resultUrls")
    if not isinstance(urls, list):
        return ()
    return tuple(u for u in urls if isinstance(u, str) and u.startswith(("http://", "https://")))


# Words in kie.ai's failure messages that mean its safety filter refused (e.g. "Invalid prompt:
# prompt contains prohibited content"); kie.ai documents no failure code for it.
_SAFETY_WORDS = (
    "nsfw",
    "prohibited",
    "sensitive",
    "safety",
    "unsafe",
    "inappropriate",
    "content policy",
    "moderation",
    "flagged",
    "explicit",
)


def blocked_by_safety_filter(message: str | None) -> bool:
    """Whether a failure message says kie.ai's content filter blocked the request or image."""
    text = (message or "").lower()
    return any(word in text for word in _SAFETY_WORDS)


def parse_credits(data: Any) -> float | None:
    """What a task cost, from a callback or task record (`creditsConsumed`, older pages
    `consumeCredits`); None when absent or implausible."""
    if not isinstance(data, Mapping):
        return None
    for key in ("creditsConsumed", "consumeCredits", "credits_consumed"):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) if 0 <= value <= 100_000 else None
    return None


def parse_task_info(data: Any) -> TaskInfo:
    if not isinstance(data, Mapping):
        raise KieMalformedResponse("recordInfo answered without task data")
    task_id = data.get("taskId")
    state = data.get("state")
    if not isinstance(task_id, str) or not isinstance(state, str):
        raise KieMalformedResponse("recordInfo answered without taskId or state")
    fail_code = data.get("failCode")
    fail_message = data.get("failMsg")
    return TaskInfo(
        task_id=task_id,
        state=state,
        result_urls=parse_result_urls(data.get("resultJson")),
        fail_code=str(fail_code) if fail_code not in (None, "") else None,
        fail_message=str(fail_message) if fail_message not in (None, "") else None,
        credits=parse_credits(data),
    )


_IMAGE_OR_BINARY = ("image/", "application/octet-stream", "binary/octet-stream")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image_type(head: bytes) -> str | None:
    """The image type the first bytes show; storage servers often say octet-stream."""
    for magic, content_type in _MAGIC:
        if head.startswith(magic):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


# --- client -----------------------------------------------------------------------------------


class KieClient:
    """Talks to kie.ai through one shared aiohttp session, inside the documented rate limits."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: str,
        base_url: str,
        upload_base_url: str = "https://kieai.redpandaai.co",
        submit_limiter: SlidingWindowLimiter,
        query_limiter: SlidingWindowLimiter,
        request_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        fetch_policy: FetchPolicy | None = None,
    ) -> None:
        self._session = session
        # What downloads may reach; by default kie.ai's own configured hosts only.
        self._fetch_policy = fetch_policy or FetchPolicy.trusting((), base_url, upload_base_url)
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._base = base_url.rstrip("/")
        self._upload_base = upload_base_url.rstrip("/")
        self._submit_limiter = submit_limiter
        self._query_limiter = query_limiter
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    def __repr__(self) -> str:  # never show the key
        return f"KieClient(base_url={self._base!r})"

    def assume_recent_use(self, submission_ages: list[float]) -> None:
        """After a restart: the previous run's recent calls still count at kie.ai.

        `submission_ages` are the ages in seconds of createTask calls it made; its status
        queries were not recorded, so a full query window is assumed used.
        """
        self._submit_limiter.record_past(submission_ages)
        self._query_limiter.delay(self._query_limiter.period)

    @property
    def submit_window(self) -> float:
        return self._submit_limiter.period

    def submit_turn(self, queue_key: Hashable = None) -> Turn:
        """Where a new submission for `queue_key` would stand in the line for kie.ai."""
        return self._submit_limiter.turn(queue_key)

    async def create_task(
        self,
        request: ImageRequest,
        callback_url: str | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
        queue_key: Hashable = None,
    ) -> str:
        """Submit a generation and return its taskId.

        Retries only rejections after which nothing was created (429, 455, or a connection that
        could not even be opened). Anything that may have reached kie.ai raises
        `KieSubmitUncertain` instead, because a second request would be a second paid image.
        `before_send` runs once the rate limiter has given this request its turn, right before
        it goes on the wire (the job records "submitting" there). Callers waiting for a turn are
        served round-robin by `queue_key` (the member), so nobody can hog the line.
        """
        payload = build_create_payload(request, callback_url)
        for attempt in range(self._retry.attempts):
            try:
                async with self._submit_limiter.use(queue_key):
                    if before_send is not None:
                        await before_send()
                    body, retry_after = await self._post_json("/api/v1/jobs/createTask", payload)
            except aiohttp.ClientConnectorError as exc:
                # The connection never opened, so the request cannot have reached kie.ai.
                error: KieError = KieConnectionError(f"could not connect to kie.ai: {exc.os_error}")
                retry_after = None
            except (aiohttp.ClientError, TimeoutError, KieMalformedResponse) as exc:
                raise KieSubmitUncertain(
                    f"createTask outcome unknown ({type(exc).__name__})"
                ) from None
            else:
                try:
                    return parse_task_id(envelope_data(body))
                except _RETRYABLE as exc:
                    error = exc
            if attempt + 1 == self._retry.attempts:
                break
            wait = self._retry.delay(attempt, retry_after)
            log.warning("kie.ai createTask rejected (%s); retrying in %.2fs", error, wait)
            if isinstance(error, KieRateLimited):
                # Every submitter backs off, not just this one: the limit is per account.
                self._submit_limiter.delay(wait)
            else:
                await self._sleep(wait)
        raise error

    def free_query_slots(self) -> int:
        return self._query_limiter.free_now()

    def query_slot(self) -> contextlib.AbstractAsyncContextManager[Grant]:
        """A turn in the status-query budget, for a caller that picks the task once it has one."""
        return self._query_limiter.use()

    async def get_task(self, task_id: str, *, slot_held: bool = False) -> TaskInfo:
        """One recordInfo query. Failures raise; the caller's polling loop decides what next.

        With `slot_held`, the caller already holds a `query_slot()`.
        """
        try:
            async with contextlib.nullcontext() if slot_held else self._query_limiter.use():
                body, retry_after = await self._get_json(
                    "/api/v1/jobs/recordInfo", params={"taskId": task_id}
                )
        except aiohttp.ClientError as exc:
            raise KieConnectionError(f"recordInfo failed: {type(exc).__name__}") from None
        except TimeoutError:
            raise KieTimeout("recordInfo timed out") from None
        try:
            return parse_task_info(envelope_data(body))
        except KieRateLimited:
            self._query_limiter.delay(self._retry.delay(0, retry_after))
            raise

    async def get_credits(self) -> float:
        try:
            async with self._query_limiter.use():
                body, _ = await self._get_json("/api/v1/chat/credit")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KieConnectionError(f"credit query failed: {type(exc).__name__}") from None
        data = envelope_data(body)
        if isinstance(data, Mapping):
            data = data.get("credits", data.get("remainingCredits"))
        if not isinstance(data, int | float):
            raise KieMalformedResponse("credit query answered without a number")
        return float(data)

    async def upload_reference(self, file_url: str, *, upload_path: str) -> str:
        """Copy a reference image to kie.ai's file host and return the link for `input_urls`.

        Discord's attachment links are signed and expire, so kie.ai gets its own copy (free,
        deleted after 3 days). The file host fetches `file_url` itself.
        """
        try:
            body, _ = await self._post_json(
                "/api/file-url-upload",
                {"fileUrl": file_url, "uploadPath": upload_path},
                base=self._upload_base,
            )
        except aiohttp.ClientError as exc:
            raise KieConnectionError(f"file upload failed: {type(exc).__name__}") from None
        except TimeoutError:
            raise KieTimeout("file upload timed out") from None
        return parse_upload_url(envelope_data(body))

    async def download(self, url: str, *, max_bytes: int, time_limit: float) -> DownloadedImage:
        """Fetch a result image with a size cap, falling back to a fresh link; `time_limit`
        bounds all of it (redirects and the fallback included)."""
        try:
            async with asyncio.timeout(time_limit):
                try:
                    return await self._download_once(url, max_bytes=max_bytes)
                except DownloadError as first:
                    fresh = await self._fresh_download_url(url)
                    if fresh is None:
                        raise first from None
                    log.info("direct download failed (%s); retrying with a fresh link", first)
                    return await self._download_once(fresh, max_bytes=max_bytes)
        except TimeoutError:
            raise DownloadError("image download timed out") from None

    async def _fresh_download_url(self, url: str) -> str | None:
        try:
            async with self._query_limiter.use():
                body, _ = await self._post_json("/api/v1/common/download-url", {"url": url})
            data = envelope_data(body)
        except (aiohttp.ClientError, TimeoutError, KieError):
            return None
        if isinstance(data, Mapping):
            data = data.get("url") or data.get("downloadUrl")
        return data if isinstance(data, str) and data.startswith(("http://", "https://")) else None

    async def _download_once(self, url: str, *, max_bytes: int) -> DownloadedImage:
        """One download, following redirects by hand so that every hop meets the policy."""
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                checked = self._fetch_policy.check(target)
            except UrlRefused as refused:
                raise DownloadError(f"image URL refused: {refused}") from None
            found = await self._fetch_image(checked, max_bytes=max_bytes)
            if isinstance(found, DownloadedImage):
                return found
            target = str(checked.join(found))
        raise DownloadError("image download redirected too many times")

    async def _fetch_image(self, url: yarl.URL, *, max_bytes: int) -> DownloadedImage | yarl.URL:
        """The image, or where a redirect points."""
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                location = response.headers.get("Location")
                if response.status in _REDIRECTS and location:
                    return yarl.URL(location)
                if response.status != 200:
                    raise DownloadError(f"image download answered HTTP {response.status}")
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
                if content_type and not content_type.startswith(_IMAGE_OR_BINARY):
                    raise DownloadError(f"image download returned {content_type}, not an image")
                if (response.content_length or 0) > max_bytes:
                    raise DownloadError("image is larger than the download cap")
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data.extend(chunk)
                    if len(data) > max_bytes:
                        raise DownloadError("image is larger than the download cap")
        except (aiohttp.ClientError, OSError) as exc:
            raise DownloadError(f"image download failed: {type(exc).__name__}") from None
        sniffed = sniff_image_type(bytes(data[:16]))
        if sniffed is None:
            raise DownloadError("the download is not a PNG, JPEG, WebP or GIF image")
        return DownloadedImage(bytes(data), sniffed, str(url))

    async def _post_json(
        self, path: str, payload: Any, *, base: str | None = None
    ) -> tuple[Any, float | None]:
        async with self._session.post(
            (base or self._base) + path,
            json=payload,
            headers=self._headers,
            timeout=self._timeout,
            allow_redirects=False,
        ) as response:
            return await self._read_envelope(response)

    async def _get_json(
        self, path: str, params: dict[str, str] | None = None
    ) -> tuple[Any, float | None]:
        async with self._session.get(
            self._base + path,
            params=params,
            headers=self._headers,
            timeout=self._timeout,
            allow_redirects=False,
        ) as response:
            return await self._read_envelope(response)

    @staticmethod
    async def _read_envelope(response: aiohttp.ClientResponse) -> tuple[Any, float | None]:
        raw = await response.content.read(MAX_API_BYTES + 1)
        if len(raw) > MAX_API_BYTES:
            raise KieMalformedResponse("kie.ai answered with an oversized body")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
        if isinstance(body, Mapping) and isinstance(body.get("code"), int):
            return body, _retry_after(response)
        # A gateway or rate limiter answered instead of the API: map its HTTP status.
        if response.status in _ERRORS_BY_CODE:
            return {"code": response.status, "msg": f"HTTP {response.status}"}, _retry_after(
                response
            )
        if response.status >= 500:
            return {"code": 500, "msg": f"HTTP {response.status}"}, _retry_after(response)
        raise KieMalformedResponse(f"kie.ai answered HTTP {response.status} without an envelope")
