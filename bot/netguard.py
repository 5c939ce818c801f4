"""What the bot may fetch: https from public addresses, unless the operator trusts the host.

Every URL the bot itself fetches (result images, kie.ai's fresh links, each redirect hop) passes
`FetchPolicy.check`: plain http and literal addresses in loopback, private, link-local,
multicast or reserved ranges are refused. Host names are checked where it counts, when they are
resolved for the connection (`PublicOnlyResolver`), so a name that resolves to an internal
address is refused too, and no second look-up can swap the address after the check.

Trusted hosts (`TRUSTED_DOWNLOAD_HOSTS`, and the hosts of `KIE_API_BASE` and `KIE_UPLOAD_BASE`,
which the operator configured) may be fetched anyway, over http or on such addresses, on any
port: local test servers and the fakes.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

MAX_REDIRECTS = 5


class UrlRefused(Exception):
    """The URL is not one the bot will fetch; the message says why (no secrets in it)."""


def is_public(address: str) -> bool:
    """Whether an IP address is on the public internet (not loopback, private, link-local,
    multicast, reserved or shared address space)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


@dataclass(frozen=True)
class FetchPolicy:
    trusted_hosts: frozenset[str] = frozenset()

    @classmethod
    def trusting(cls, hosts: Iterable[str], *bases: str) -> FetchPolicy:
        """`hosts` as given, plus the hosts of the configured base URLs."""
        names = {h.strip().strip("[]").lower() for h in hosts if h.strip()}
        names |= {(URL(base).host or "").lower() for base in bases if base}
        return cls(frozenset(n for n in names if n))

    def trusted(self, host: str) -> bool:
        return host.strip("[]").lower() in self.trusted_hosts

    def check(self, url: str | URL) -> URL:
        """The URL, if the bot may fetch it; raises `UrlRefused` otherwise."""
        parsed = url if isinstance(url, URL) else URL(url)
        host = parsed.host or ""
        if parsed.scheme not in ("http", "https") or not host:
            raise UrlRefused("only http(s) URLs with a host are fetched")
        if self.trusted(host):
            return parsed
        if parsed.scheme != "https":
            raise UrlRefused("plain http is not fetched from untrusted hosts")
        literal = _literal(host)
        if literal is not None and not is_public(literal):
            raise UrlRefused("the address is not a public one")
        return parsed


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public addresses of untrusted host names."""

    def __init__(self, policy: FetchPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.trusted(host):
            return results
        public = [result for result in results if is_public(result["host"])]
        if not public:
            raise OSError(f"{host[:100]} has no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(policy: FetchPolicy, **kwargs: Any) -> aiohttp.ClientSession:
    """The bot's outgoing HTTP session, for kie.ai and downloads."""
    connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(policy))
    return aiohttp.ClientSession(connector=connector, **kwargs)
