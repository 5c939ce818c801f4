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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

HEAD_BYTES = 16 * 1024  # status line and headers of an answer; never more
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


class PlainPosts:
    """POSTs JSON to one origin or more, keeping up to `connections` open per origin (a burst
    reuses them; more requests at once than that wait for one). Opened and closed by its owner
    (`close`); `ssl_context` is for tests against a local TLS server."""

    def __init__(
        self,
        *,
        user_agent: str,
        connections: int,
        body_bytes: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._user_agent = user_agent
        self._body_bytes = body_bytes
        self._connections = connections
        self._ssl = ssl_context
        self._idle: dict[Origin, collections.deque[_Exchange]] = {}
        self._slots: dict[Origin, asyncio.Semaphore] = {}
        self._open: set[_Exchange] = set()

    async def post(self, url: str, body: bytes, *, within: float) -> Answer:
        """The answer to one POST of `body` (JSON) within `within` seconds; raises `OSError`
        (this module's `PlainPostError` among them) or `TimeoutError`. A request given up
        (timed out or cancelled) has its connection closed."""
        origin, target = _split(url)
        request = self._request(origin, target, body)
        slots = self._slots.setdefault(origin, asyncio.Semaphore(self._connections))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        # asyncio.timeout only where there is a wait (a free connection slot, a connection to
        # open); the answer itself is bounded by one timer, a fifth of the cost in a burst.
        if slots.locked():
            async with asyncio.timeout_at(deadline):
                await slots.acquire()
        else:
            await slots.acquire()
        try:
            exchange = self._take(origin)
            if exchange is None:
                async with asyncio.timeout_at(deadline):
                    exchange = await self._connect(origin)
            answering = exchange.send(request)
            expiry = loop.call_at(deadline, _expire, answering)
            try:
                answer = await answering
            except BaseException:
                self._discard(exchange)
                raise
            finally:
                expiry.cancel()
            if exchange.reusable and not exchange.closed:
                self._idle.setdefault(origin, collections.deque()).append(exchange)
            else:
                self._discard(exchange)
            return answer
        finally:
            slots.release()

    async def close(self) -> None:
        for exchange in list(self._open):
            self._discard(exchange)
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    def _take(self, origin: Origin) -> _Exchange | None:
        idle = self._idle.get(origin)
        while idle:
            exchange = idle.pop()  # the most recently used: the least likely to have timed out
            if not exchange.closed:
                return exchange
            self._open.discard(exchange)
        return None

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
        self._open.add(exchange)
        return exchange

    def _discard(self, exchange: _Exchange) -> None:
        exchange.close()
        self._open.discard(exchange)

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
