"""The deferrals' HTTP/1.1 client (`bot/ui/plainpost.py`) against a scripted server on loopback:
what it writes, how it reads each way an answer can be framed, its bounds, connection reuse,
and TLS with a real certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.ui.plainpost import HEAD_BYTES, OPENS_AT_ONCE, Origin, PlainPostError, PlainPosts

BODY_BYTES = 1024
JSON_204 = b"HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\n\r\n"

# What the server answers to each request: raw bytes written in pieces, then maybe a close.
Script = Callable[[int], tuple[list[bytes], bool]]


@dataclass
class Server:
    url: str
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    closed_by_client: int = 0


@asynccontextmanager
async def serve(
    script: Script, tls: ssl.SSLContext | None = None, answers: asyncio.Event | None = None
) -> AsyncIterator[Server]:
    """A server answering by `script`; with `answers`, each answer waits until it is set."""
    server = Server(url="")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                server.requests.append(head + await reader.readexactly(length))
                pieces, close = script(len(server.requests))
                if answers is not None:
                    await answers.wait()
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)  # each piece its own read on the client
                if close:
                    break
        except asyncio.IncompleteReadError:
            server.closed_by_client += 1
        finally:
            writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = listening.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}"
    try:
        yield server
    finally:
        listening.close()


@pytest.fixture
async def posts() -> AsyncIterator[PlainPosts]:
    client = PlainPosts(user_agent="DiscordBot (test, 1)", connections=4, body_bytes=BODY_BYTES)
    yield client
    await client.close()


def always(*pieces: bytes, close: bool = False) -> Script:
    return lambda _: (list(pieces), close)


async def test_it_writes_one_json_post_and_reuses_the_connection(posts: PlainPosts) -> None:
    async with serve(always(JSON_204)) as server:
        for n in range(3):
            answer = await posts.post(
                f"{server.url}/api/v10/i/1/tok/callback?x=1", b'{"n":%d}' % n, within=5
            )
            assert (answer.status, answer.body) == (204, b"")
        assert server.connections == 1, "kept alive: one connection for all three"
        head, _, body = server.requests[0].partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /api/v10/i/1/tok/callback?x=1 HTTP/1.1"
        assert set(lines[1:]) == {
            f"Host: {server.url.removeprefix('http://')}",
            "User-Agent: DiscordBot (test, 1)",
            "Content-Type: application/json",
            "Content-Length: 7",
        }
        assert body == b'{"n":0}'


@pytest.mark.parametrize(
    "pieces",
    [
        [
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 24\r\n",
            b'\r\n{"code": 40060, "m": 1}\n',
        ],
        [
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\n"
            b'Transfer-Encoding: chunked\r\n\r\ne\r\n{"code"',
            b': 40060\r\na\r\n, "m": 1}\n\r\n0\r\n',
            b"\r\n",
        ],
    ],
    ids=["content-length", "chunked"],
)
async def test_an_error_body_is_read_whole_however_it_is_framed(
    posts: PlainPosts, pieces: list[bytes]
) -> None:
    async with serve(always(*pieces)) as server:
        answer = await posts.post(server.url + "/cb", b"{}", within=5)
        assert (answer.status, answer.reason) == (400, "Bad Request")
        assert answer.content_type == "application/json"
        assert answer.body.replace(b" ", b"") == b'{"code":40060,"m":1}\n'
        await posts.post(server.url + "/cb", b"{}", within=5)
        assert server.connections == 1


async def test_a_body_without_a_length_runs_until_the_close(posts: PlainPosts) -> None:
    async with serve(
        always(b"HTTP/1.1 502 Bad Gateway\r\n\r\nupstream", b" down", close=True)
    ) as s:
        answer = await posts.post(s.url + "/cb", b"{}", within=5)
        assert (answer.status, answer.body) == (502, b"upstream down")
        await posts.post(s.url + "/cb", b"{}", within=5)
        assert s.connections == 2, "a connection closed by its answer is not reused"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 204 No Content\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n",  # more than was asked for
    ],
    ids=["connection close", "HTTP/1.0", "unasked bytes"],
)
async def test_a_connection_is_not_reused_unless_the_answer_allows_it(
    posts: PlainPosts, answer: bytes
) -> None:
    async with serve(always(answer)) as server:
        for _ in range(2):
            assert (await posts.post(server.url + "/cb", b"{}", within=5)).status == 204
        assert server.connections == 2


@pytest.mark.parametrize(
    ("pieces", "why"),
    [
        ([b"HTTP/1.1 200 OK\r\nX: " + b"a" * HEAD_BYTES], "head is too large"),
        ([b"HTTP/1.1 400 Bad\r\nContent-Length: %d\r\n\r\n" % (BODY_BYTES + 1)], "too large"),
        ([b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n"], "too large"),
        ([b"HTTP/1.1 400 Bad\r\nContent-Length: -1\r\n\r\n"], "not a number"),
        ([b"SSH-2.0-OpenSSH_9.6\r\n\r\n"], "not HTTP"),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], "closed before"),
        ([b"HTTP/1.1 400 Bad\r\nContent-Length: \xb2\r\n\r\n"], "not a number"),
        ([b"HTTP/1.1 \xb200 OK\r\n\r\n"], "not HTTP"),
        ([b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n-9\r\nabc\r\n"], "chunk"),
        ([b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n"], "chunk"),
    ],
    ids=[
        "huge head",
        "huge body",
        "huge chunk",
        "bad length",
        "not http",
        "cut short",
        "superscript length",
        "superscript status",
        "negative chunk",
        "prefixed chunk",
    ],
)
async def test_a_broken_or_oversized_answer_fails_as_a_connection_error(
    posts: PlainPosts, pieces: list[bytes], why: str
) -> None:
    async with serve(always(*pieces, close=True)) as server:
        with pytest.raises(PlainPostError, match=why) as raised:
            await posts.post(server.url + "/cb", b"{}", within=5)
        assert isinstance(raised.value, OSError), "Deferrals retries OSErrors"


@pytest.mark.parametrize("given_up_by", ["its own time limit", "the caller"])
async def test_a_server_that_never_answers_is_left_in_time(
    posts: PlainPosts, given_up_by: str
) -> None:
    async with serve(always()) as server:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            if given_up_by == "the caller":
                async with asyncio.timeout(0.2):
                    await posts.post(server.url + "/cb", b"{}", within=5)
            else:
                await posts.post(server.url + "/cb", b"{}", within=0.2)
        assert asyncio.get_running_loop().time() - started < 2
        for _ in range(100):
            if server.closed_by_client:
                break
            await asyncio.sleep(0.01)
        assert server.closed_by_client == 1, "the abandoned connection is closed"


async def test_a_request_waiting_for_a_connection_slot_times_out_too() -> None:
    one = PlainPosts(user_agent="t", connections=1, body_bytes=BODY_BYTES)
    try:
        async with serve(always()) as server:
            hung = asyncio.ensure_future(one.post(server.url + "/cb", b"{}", within=5))
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                await one.post(server.url + "/cb", b"{}", within=0.2)
            assert server.connections == 1, "it never got a connection"
            hung.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hung
    finally:
        await one.close()


async def test_requests_at_once_share_at_most_the_connections_allowed(posts: PlainPosts) -> None:
    async with serve(always(JSON_204)) as server:
        answers = await asyncio.gather(
            *(posts.post(server.url + "/cb", b"{}", within=5) for _ in range(20))
        )
        assert {a.status for a in answers} == {204}
        assert server.connections == 4


class RecordingOpens(PlainPosts):
    """Records when it opens each connection (the loop's clock)."""

    opened_at: list[float]

    async def _connect(self, origin: Origin) -> Any:
        self.opened_at.append(asyncio.get_running_loop().time())
        return await super()._connect(origin)


async def test_connections_are_opened_a_few_at_a_time_up_to_the_limit() -> None:
    # Twenty requests at once, with every answer held: sixteen connections are needed, and a
    # burst of them is opened at once (OPENS_AT_ONCE), then the rest one per 1/rate seconds.
    rate = 50.0
    gradual = RecordingOpens(
        user_agent="t", connections=16, body_bytes=BODY_BYTES, opens_per_second=rate
    )
    gradual.opened_at = []
    answers = asyncio.Event()
    try:
        async with serve(always(JSON_204), answers=answers) as server:
            posting = asyncio.gather(
                *(gradual.post(server.url + "/cb", b"{}", within=5) for _ in range(20))
            )
            for _ in range(300):
                if server.connections == 16:
                    break
                await asyncio.sleep(0.01)
            assert server.connections == 16, "every connection allowed is opened, when needed"
            answers.set()
            assert {a.status for a in await posting} == {204}
            assert server.connections == 16, "the four requests left over reuse them"
        first = gradual.opened_at[0]
        late = [
            (n, at - first)
            for n, at in enumerate(gradual.opened_at)
            if at - first < (n + 1 - OPENS_AT_ONCE) / rate - 0.005
        ]
        assert not late, f"opened sooner than the rate allows: {late}"
    finally:
        await gradual.close()


async def test_sent_is_told_once_the_request_is_written_before_its_answer() -> None:
    client = PlainPosts(user_agent="t", connections=1, body_bytes=BODY_BYTES)
    answers = asyncio.Event()
    written = asyncio.Event()
    try:
        async with serve(always(JSON_204), answers=answers) as server:
            posting = asyncio.ensure_future(
                client.post(server.url + "/cb", b"{}", within=5, sent=written.set)
            )
            async with asyncio.timeout(5):
                await written.wait()
            assert not posting.done(), "told before the answer came"
            answers.set()
            assert (await posting).status == 204
    finally:
        await client.close()


async def test_a_request_that_gave_up_waiting_for_a_connection_leaves_it_to_the_next() -> None:
    one = PlainPosts(user_agent="t", connections=1, body_bytes=BODY_BYTES)
    answers = asyncio.Event()
    try:
        async with serve(always(JSON_204), answers=answers) as server:
            first = asyncio.ensure_future(one.post(server.url + "/cb", b"{}", within=5))
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                await one.post(server.url + "/cb", b"{}", within=0.1)
            third = asyncio.ensure_future(one.post(server.url + "/cb", b"{}", within=5))
            await asyncio.sleep(0.05)
            answers.set()
            assert (await first).status == 204
            assert (await third).status == 204
            assert server.connections == 1, "handed from the first to the third, kept alive"
    finally:
        await one.close()


def certificate(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for localhost, and a client
    context that trusts it (and checks the host name, as the default context does)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


async def test_https_is_tls_with_the_host_name_checked(tmp_path: Path) -> None:
    server_tls, client_tls = certificate(tmp_path)
    trusting = PlainPosts(
        user_agent="t", connections=2, body_bytes=BODY_BYTES, ssl_context=client_tls
    )
    default = PlainPosts(user_agent="t", connections=2, body_bytes=BODY_BYTES)
    try:
        async with serve(always(JSON_204), tls=server_tls) as server:
            assert server.url.startswith("https://localhost:")
            for _ in range(2):
                assert (await trusting.post(server.url + "/cb", b"{}", within=5)).status == 204
            assert server.connections == 1
            assert server.requests[0].startswith(b"POST /cb HTTP/1.1\r\n")
            with pytest.raises(ssl.SSLCertVerificationError):
                await default.post(server.url + "/cb", b"{}", within=5)  # not a trusted certificate
    finally:
        await trusting.close()
        await default.close()
