"""Small JSON POSTs over HTTP/1.1 on kept-alive connections, for the deferrals alone.

In a burst of thousands of commands, each one's "thinking…" answer is a POST that must leave
within Discord's 3 s, all from one event loop. aiohttp's general client spends about 0.2 ms of
that loop on each (its request and response objects, timers, payload writer, tracing hooks);
this client writes one prepared request and reads one bounded reply, about a tenth of that
(bench/README.md). It does only what a deferral needs: a POST with a JSON body to one origin,
an answer whose head and body are bounded, `Content-Length` or chunked bodies, connections
reused until the server closes them. Everything else stays on aiohttp (discord.py's client).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

HEAD_BYTES = 16 * 1024  # status line and headers of an answer; never more
# New connections per origin: at most OPENS_PER_SECOND, and OPENS_AT_ONCE in one moment. A
# burst 50 ms from Discord needs about 150 connections to answer 3,000 commands a second;
# this opens them within a third of a second, a few per turn of the event loop.
OPENS_PER_SECOND = 500.0
OPENS_AT_ONCE = 8
NO_BODY = frozenset({204, 304})
# ASCII digits only: str.isdigit() also takes "²" and other digits int() refuses.
_DECIMAL = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class PlainPostError(ConnectionError):
    """The answer broke the protocol or its bounds, or the connection ended before it."""


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class _Head:
    status: int
    reason: str
    version: str
    headers: dict[str, str]  # names lower-cased

    @property
    def framed(self) -> bool:
        """Whether the body's end is marked (else it runs until the server closes)."""
        return (
            self.status in NO_BODY
            or "content-length" in self.headers
            or "transfer-encoding" in self.headers
        )


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class _Exchange(asyncio.Protocol):
    """One connection, one request at a time: collects the answer to the request in flight."""

    def __init__(self, body_bytes: int) -> None:
        self._body_bytes = body_bytes
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._answer: asyncio.Future[Answer] | None = None
        self._head: _Head | None = None
        self.closed = False
        self.reusable = False  # set once an answer allows another request on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            if self._head is not None and not self._head.framed:
                self._finish(bytes(self._buffer))  # a body that runs until the close
            else:
                self._answer.set_exception(PlainPostError("the connection closed before an answer"))

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self._transport is not None
        self._buffer.clear()
        self._head = None
        self.reusable = False
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return self._answer

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # nothing was asked: the server is not speaking HTTP to us
            return
        self._buffer += data
        try:
            self._parse()
        except PlainPostError as error:
            self._answer.set_exception(error)
            self.close()

    def _parse(self) -> None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > HEAD_BYTES:
                    raise PlainPostError("the answer's head is too large")
                return
            head = self._read_head(bytes(self._buffer[:end]))
            del self._buffer[: end + 4]
            if 100 <= head.status < 200:  # an interim answer (100 Continue): the real one follows
                self._parse()
                return
            self._head = head
        headers = self._head.headers
        if self._head.status in NO_BODY:
            self._finish(b"", 0)
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            chunked = _dechunk(self._buffer, self._body_bytes)
            if chunked is not None:
                self._finish(*chunked)
        elif "content-length" in headers:
            length = _length(headers["content-length"])
            if length > self._body_bytes:
                raise PlainPostError("the answer's body is too large")
            if len(self._buffer) >= length:
                self._finish(bytes(self._buffer[:length]), length)
        elif len(self._buffer) > self._body_bytes:
            raise PlainPostError("the answer's body is too large")
        # else: a body that runs until the server closes (connection_lost finishes it)

    @staticmethod
    def _read_head(raw: bytes) -> _Head:
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _DECIMAL.fullmatch(parts[1]):
            raise PlainPostError("the answer is not HTTP/1.x")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        return _Head(int(parts[1]), parts[2] if len(parts) > 2 else "", parts[0], headers)

    def _finish(self, body: bytes, used: int = -1) -> None:
        """Answer with `body`; `used` is how many buffered bytes the answer took (-1: all, up
        to the close)."""
        assert self._head is not None and self._answer is not None
        head = self._head
        keep = head.version == "HTTP/1.1" and "close" not in head.headers.get("connection", "")
        # Bytes past the answer were never asked for: the connection is not trusted again.
        self.reusable = keep and head.framed and not self.closed and len(self._buffer) == used
        self._answer.set_result(Answer(head.status, head.reason, head.headers, body))


def _expire(answering: asyncio.Future[Answer]) -> None:
    if not answering.done():
        answering.set_exception(TimeoutError())


def _length(value: str) -> int:
    if not _DECIMAL.fullmatch(value):
        raise PlainPostError("the answer's Content-Length is not a number")
    return int(value)


def _dechunk(buffer: bytearray, limit: int) -> tuple[bytes, int] | None:
    """The whole body of a chunked answer and the bytes it took, or None while it is still
    arriving."""
    body = bytearray()
    at = 0
    while True:
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None
        size_text = bytes(buffer[at:end]).split(b";")[0].strip()
        # Hex digits only: int() would also take a sign, "0x" or "_", and a negative size
        # would send the reader backwards.
        if not _HEX.fullmatch(size_text):
            raise PlainPostError("a chunk's size is not a number")
        size = int(size_text, 16)
        if size == 0:
            # Trailers (none expected) end with an empty line.
            last = buffer.find(b"\r\n\r\n", end)
            return (bytes(body), last + 4) if last >= 0 else None
        if len(body) + size > limit:
            raise PlainPostError("the answer's body is too large")
        if len(buffer) < end + 2 + size + 2:
            return None
        body += buffer[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


class _Pool:
    """One origin's connections: the idle ones, how many are open or being opened, the right
    to open more (`opens_per_second`, a few at once), and the requests waiting for one (each
    handed a connection as one is freed, or woken to look again when it may open one)."""

    def __init__(self, limit: int, opens_per_second: float) -> None:
        self.limit = limit
        self.idle: collections.deque[_Exchange] = collections.deque()
        self.open: set[_Exchange] = set()
        self.size = 0  # connections open or being opened
        self.waiting: collections.deque[asyncio.Future[_Exchange | None]] = collections.deque()
        self._rate = opens_per_second
        self._credit = float(OPENS_AT_ONCE)  # connections that may be opened now
        self._credited_at = 0.0
        self._waking: asyncio.TimerHandle | None = None

    def may_open(self, now: float) -> bool:
        if self.size >= self.limit:
            return False
        self._credit = min(
            float(OPENS_AT_ONCE), self._credit + (now - self._credited_at) * self._rate
        )
        self._credited_at = now
        return self._credit >= 1

    def opening(self) -> None:
        self._credit -= 1
        self.size += 1

    def opened(self, exchange: _Exchange) -> None:
        self.open.add(exchange)
        self.wake()  # the next waiting request may open another, credit allowing

    def not_opened(self) -> None:
        self.size -= 1
        self.wake()  # its room is free again

    def wake_when_it_may_open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Room but no credit: a waiting request is woken once the next open is allowed."""
        if self.size < self.limit and self._waking is None:
            self._waking = loop.call_later((1 - self._credit) / self._rate, self._woken)

    def _woken(self) -> None:
        self._waking = None
        self.wake()

    def take(self) -> _Exchange | None:
        while self.idle:
            exchange = self.idle.pop()  # the most recently used: the least likely to have timed out
            if not exchange.closed:
                return exchange
            self.open.discard(exchange)  # closed by the server while idle
            self.size -= 1
        return None

    def put(self, exchange: _Exchange) -> None:
        """A connection free for another request: the longest-waiting one's, else idle."""
        if not self._hand(exchange):
            self.idle.append(exchange)

    def lost(self, exchange: _Exchange) -> None:
        """A connection closed: room for another, so a waiting request may open one."""
        exchange.close()
        self.open.discard(exchange)
        self.size -= 1
        self.wake()

    def wake(self) -> None:
        """The longest-waiting request looks again: it may open a connection now."""
        self._hand(None)

    def _hand(self, exchange: _Exchange | None) -> bool:
        """Give `exchange` (None: a chance to open one) to the longest-waiting request still
        waiting; False if none is."""
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(exchange)
                return True
        return False

    def close(self) -> None:
        if self._waking is not None:
            self._waking.cancel()
        for exchange in self.open:
            exchange.close()


class PlainPosts:
    """POSTs JSON to one origin or more, keeping up to `connections` open per origin (a burst
    reuses them; more requests at once than that wait for one). New connections are opened
    as requests find none free, at most `opens_per_second` (a few at once): a burst does not
    open hundreds in the same moment, which would overflow a server's queue of connections
    not yet accepted (a dropped connection is retried by the kernel a whole second later) and
    cost a TLS handshake each on the event loop at the worst time. Opened and closed by its
    owner (`close`); `ssl_context` is for tests against a local TLS server."""

    def __init__(
        self,
        *,
        user_agent: str,
        connections: int,
        body_bytes: int,
        opens_per_second: float = OPENS_PER_SECOND,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._user_agent = user_agent
        self._body_bytes = body_bytes
        self._connections = connections
        self._opens_per_second = opens_per_second
        self._ssl = ssl_context
        self._pools: dict[Origin, _Pool] = {}

    async def post(
        self, url: str, body: bytes, *, within: float, sent: Callable[[], None] | None = None
    ) -> Answer:
        """The answer to one POST of `body` (JSON) within `within` seconds; raises `OSError`
        (this module's `PlainPostError` among them) or `TimeoutError`. A request given up
        (timed out or cancelled) has its connection closed. `sent` is called once the request
        is written, while its answer is still on its way."""
        origin, target = _split(url)
        request = self._request(origin, target, body)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self._connections, self._opens_per_second)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        exchange = pool.take() or await self._acquire(pool, origin, deadline)
        try:
            answering = exchange.send(request)
            if sent is not None:
                sent()
            # The answer is bounded by one timer: asyncio.timeout costs five times as much.
            expiry = loop.call_at(deadline, _expire, answering)
            try:
                answer = await answering
            finally:
                expiry.cancel()
        except BaseException:
            pool.lost(exchange)
            raise
        if exchange.reusable and not exchange.closed:
            pool.put(exchange)
        else:
            pool.lost(exchange)
        return answer

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    async def _acquire(self, pool: _Pool, origin: Origin, deadline: float) -> _Exchange:
        """A connection for one request, none being idle: one it opens itself, where the pool
        has room and may open one now, else the next one freed (or opened)."""
        loop = asyncio.get_running_loop()
        woken = False
        async with asyncio.timeout_at(deadline):
            while True:
                exchange = pool.take()
                if exchange is not None:
                    return exchange
                if pool.may_open(loop.time()):
                    return await self._open_one(pool, origin)
                pool.wake_when_it_may_open(loop)
                waiter: asyncio.Future[_Exchange | None] = loop.create_future()
                if woken:  # woken for nothing (another got there first): keeps its place
                    pool.waiting.appendleft(waiter)
                else:
                    pool.waiting.append(waiter)
                try:
                    handed = await waiter
                except BaseException:
                    # Given up just as a connection (or a chance to open one) was handed over:
                    # pass it on rather than lose it.
                    if waiter.done() and not waiter.cancelled():
                        got = waiter.result()
                        if got is None:
                            pool.wake()
                        else:
                            pool.put(got)
                    raise
                if handed is not None:
                    return handed
                woken = True

    async def _open_one(self, pool: _Pool, origin: Origin) -> _Exchange:
        pool.opening()
        try:
            exchange = await self._connect(origin)
        except BaseException:
            pool.not_opened()
            raise
        pool.opened(exchange)
        return exchange

    async def _connect(self, origin: Origin) -> _Exchange:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if self._ssl is None:  # loading the system's certificates once, not per connection
                self._ssl = ssl.create_default_context()
            context = self._ssl
        _, exchange = await loop.create_connection(
            lambda: _Exchange(self._body_bytes),
            origin.host,
            origin.port,
            ssl=context,
            server_hostname=origin.host if context is not None else None,
        )
        return exchange

    def _request(self, origin: Origin, target: str, body: bytes) -> bytes:
        head = (
            f"POST {target} HTTP/1.1\r\n"
            f"Host: {origin.host_header}\r\n"
            f"User-Agent: {self._user_agent}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n"
        )
        return head.encode("latin-1") + body


def _split(url: str) -> tuple[Origin, str]:
    """The origin and the request target of a URL (the origin parsed once per base URL)."""
    scheme, _, rest = url.partition("://")
    netloc, slash, target = rest.partition("/")
    return _origin(f"{scheme}://{netloc}"), slash + target or "/"


@functools.lru_cache(maxsize=16)
def _origin(base: str) -> Origin:
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http or https URL is needed")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname, port)
