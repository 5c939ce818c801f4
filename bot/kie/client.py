"""The kie.ai HTTP client: task creation, task details, credits and result downloads.

It knows nothing of Discord. It speaks frozen dataclasses and raises one error type per failure
class, keeping "the API call failed" (`KieApiError` and its kin) apart from "the image job failed"
(`TaskFailed`, which is a state of a task, not an exception of a call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Protocol

import aiohttp
import yarl

from bot.kie.breaker import CircuitBreaker
from bot.kie.errors import (
    ERRORS_BY_CODE,
    RETRYABLE,
    DownloadError,
    KieConnectionError,
    KieError,
    KieMalformedResponse,
    KieRateLimited,
    KieSubmitUncertain,
    KieTimeout,
)
from bot.kie.models import DownloadedImage, ImageRequest, RetryPolicy, TaskInfo
from bot.kie.parsing import (
    IMAGE_OR_BINARY,
    build_create_payload,
    envelope_data,
    load_json,
    parse_task_id,
    parse_task_info,
    parse_upload_url,
    sniff_image_type,
)
from bot.kie.ratelimit import Grant, SharedBudgets, SlidingWindowLimiter, Turn
from bot.netguard import MAX_REDIRECTS, FetchPolicy, UrlRefused

log = logging.getLogger(__name__)

# kie.ai's JSON answers are a few KB; anything far larger is not read whole.
MAX_API_BYTES = 1024 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)

# Documented limits: 20 createTask calls per 10 s per account, 10 recordInfo calls per second.
SUBMIT_LIMIT = (20, 10.0)
QUERY_LIMIT = (10, 1.0)
# Envelope codes of an outage, counted by the circuit breaker. 501 (a rejected generation) and
# 505 (a model switched off) are 5xx too, but they are answers about the request.
OUTAGE_CODES = frozenset({455, 500, 502, 503, 504})


def is_outage(code: object) -> bool:
    return code in OUTAGE_CODES or (isinstance(code, int) and code > 505)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


class KieObserver(Protocol):
    """Who counts the client's calls (the bot's metrics); every label is from a small set."""

    def kie_call(self, endpoint: str, status: str) -> None: ...

    def rate_limit_wait(self, limit: str, seconds: float) -> None: ...

    def balance(self, credits: float) -> None: ...


class _OtherAccount:
    """Counts another account's calls and waits, but not its balance: the balance gauge is the
    operator's account's."""

    def __init__(self, observer: KieObserver) -> None:
        self._observer = observer

    def kie_call(self, endpoint: str, status: str) -> None:
        self._observer.kie_call(endpoint, status)

    def rate_limit_wait(self, limit: str, seconds: float) -> None:
        self._observer.rate_limit_wait(limit, seconds)

    def balance(self, credits: float) -> None:
        pass


def _endpoint(path: str) -> str:
    """`/api/v1/jobs/createTask` -> `createTask`: the client's own few paths, never a URL."""
    return path.rsplit("/", 1)[-1]


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
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._session = session
        # Every API answer is reported to it; it probes with the cheap credit query.
        self.breaker = breaker or CircuitBreaker()
        self.breaker.set_probe(self.get_credits)
        # What downloads may reach; by default kie.ai's own configured hosts only.
        self._fetch_policy = fetch_policy or FetchPolicy.trusting((), base_url, upload_base_url)
        self._api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._base = base_url.rstrip("/")
        self._upload_base = upload_base_url.rstrip("/")
        self._submit_limiter = submit_limiter
        self._query_limiter = query_limiter
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._observer: KieObserver | None = None
        self._shared: SharedBudgets | None = None

    def share_limits(self, budgets: SharedBudgets) -> None:
        """Spend this key's limits together with other processes (PostgreSQL), from now on;
        every client `with_key` makes from now on too."""
        self._shared = budgets
        self._submit_limiter.share(budgets.budget(self._api_key, "submit", self._submit_limiter))
        self._query_limiter.share(budgets.budget(self._api_key, "query", self._query_limiter))

    def with_key(self, api_key: str) -> KieClient:
        """A client for another kie.ai account (a server's own key): the same session, hosts
        and policies, with its own rate budget and circuit breaker, as kie.ai's limits and
        outages-as-seen are per key."""
        client = KieClient(
            self._session,
            api_key=api_key,
            base_url=self._base,
            upload_base_url=self._upload_base,
            submit_limiter=self._submit_limiter.fresh(),
            query_limiter=self._query_limiter.fresh(),
            request_timeout=self._timeout.total or 30.0,
            retry=self._retry,
            sleep=self._sleep,
            fetch_policy=self._fetch_policy,
            breaker=self.breaker.fresh(),
        )
        if self._observer is not None:
            client.observe(_OtherAccount(self._observer))
        if self._shared is not None:
            client.share_limits(self._shared)
        return client

    def observe(self, observer: KieObserver) -> None:
        """Report every call, rate-limit wait and balance read to `observer` from now on."""
        self._observer = observer
        self._submit_limiter.on_wait = lambda seconds: observer.rate_limit_wait("submit", seconds)
        self._query_limiter.on_wait = lambda seconds: observer.rate_limit_wait("query", seconds)

    def _count(self, endpoint: str, status: str) -> None:
        if self._observer is not None:
            self._observer.kie_call(endpoint, status)

    def __repr__(self) -> str:  # never show the key
        return f"KieClient(base_url={self._base!r})"

    def assume_recent_use(self, submission_ages: list[float]) -> None:
        """After a restart: the previous run's recent calls still count at kie.ai.

        `submission_ages` are the ages in seconds of createTask calls it made; its status
        queries were not recorded, so a full query window is assumed used. With limits shared
        through the database, its calls are there, counted as long as they count at kie.ai.
        """
        if self._submit_limiter.shared:
            return
        self._submit_limiter.record_past(submission_ages)
        self._query_limiter.delay(self._query_limiter.period)

    @property
    def submit_window(self) -> float:
        return self._submit_limiter.period

    @property
    def submit_spacing(self) -> float:
        """Seconds per submission when the line is long: kie.ai's window over its limit."""
        return self._submit_limiter.period / self._submit_limiter.max_calls

    @property
    def submit_waiting(self) -> int:
        """Submissions waiting for their turn in kie.ai's rate limit."""
        return self._submit_limiter.waiting

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
                except RETRYABLE as exc:
                    error = exc
            if attempt + 1 == self._retry.attempts or not self.breaker.closed:
                break  # with the breaker open, the job waits for kie.ai instead (`JobService`)
            wait = self._retry.delay(attempt, retry_after)
            log.warning("kie.ai createTask rejected (%s); retrying in %.2fs", error, wait)
            if isinstance(error, KieRateLimited):
                # Every submitter backs off, not just this one: the limit is per account.
                await self._submit_limiter.push_back(wait)
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
            await self._query_limiter.push_back(self._retry.delay(0, retry_after))
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
        if self._observer is not None:
            self._observer.balance(float(data))
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
        answered = False
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                self._count("download", str(response.status))
                answered = True
                location = response.headers.get("Location")
                if response.status in _REDIRECTS and location:
                    return yarl.URL(location)
                if response.status != 200:
                    raise DownloadError(f"image download answered HTTP {response.status}")
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
                if content_type and not content_type.startswith(IMAGE_OR_BINARY):
                    raise DownloadError(f"image download returned {content_type}, not an image")
                if (response.content_length or 0) > max_bytes:
                    raise DownloadError("image is larger than the download cap")
                # Chunks in a list, joined once: growing one buffer copies it as it grows, and
                # every copy of a large image held the GIL for tens of milliseconds.
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_any():  # no re-slicing
                    size += len(chunk)
                    if size > max_bytes:
                        raise DownloadError("image is larger than the download cap")
                    chunks.append(chunk)
        except (aiohttp.ClientError, OSError) as exc:
            if not answered:
                self._count("download", "error")
            raise DownloadError(f"image download failed: {type(exc).__name__}") from None
        # bytes.join copies a large result without the GIL: in a thread, the loop runs on.
        data = await asyncio.to_thread(b"".join, chunks) if size > 2**20 else b"".join(chunks)
        sniffed = sniff_image_type(data[:16])
        if sniffed is None:
            raise DownloadError("the download is not a PNG, JPEG, WebP or GIF image")
        return DownloadedImage(data, sniffed, str(url))

    async def _post_json(
        self, path: str, payload: Any, *, base: str | None = None
    ) -> tuple[Any, float | None]:
        request = self._session.post(
            (base or self._base) + path,
            json=payload,
            headers=self._headers,
            timeout=self._timeout,
            allow_redirects=False,
        )
        # The file host is another service: its outages do not stop task creation.
        return await self._answer(request, _endpoint(path), observed=base is None)

    async def _get_json(
        self, path: str, params: dict[str, str] | None = None
    ) -> tuple[Any, float | None]:
        request = self._session.get(
            self._base + path,
            params=params,
            headers=self._headers,
            timeout=self._timeout,
            allow_redirects=False,
        )
        return await self._answer(request, _endpoint(path), observed=True)

    async def _answer(
        self,
        request: contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse],
        endpoint: str,
        *,
        observed: bool,
    ) -> tuple[Any, float | None]:
        """The envelope and Retry-After of one API call, counted in the metrics and told to the
        circuit breaker."""
        answered = False  # a failure while reading the body is not a second request
        try:
            async with request as response:
                self._count(endpoint, str(response.status))
                answered = True
                body, retry_after = await self._read_envelope(response)
        except (aiohttp.ClientError, TimeoutError):
            if not answered:
                self._count(endpoint, "error")
            if observed:
                self.breaker.failed()
            raise
        if observed:
            if is_outage(body.get("code")):
                self.breaker.failed()
            else:
                self.breaker.succeeded()
        return body, retry_after

    @staticmethod
    async def _read_envelope(response: aiohttp.ClientResponse) -> tuple[Any, float | None]:
        raw = await response.content.read(MAX_API_BYTES + 1)
        if len(raw) > MAX_API_BYTES:
            raise KieMalformedResponse("kie.ai answered with an oversized body")
        try:
            body = load_json(raw)
        except (ValueError, RecursionError):
            body = None
        if isinstance(body, Mapping) and isinstance(body.get("code"), int):
            return body, _retry_after(response)
        # A gateway or rate limiter answered instead of the API: map its HTTP status.
        if response.status in ERRORS_BY_CODE:
            return {"code": response.status, "msg": f"HTTP {response.status}"}, _retry_after(
                response
            )
        if response.status >= 500:
            return {"code": 500, "msg": f"HTTP {response.status}"}, _retry_after(response)
        raise KieMalformedResponse(f"kie.ai answered HTTP {response.status} without an envelope")
