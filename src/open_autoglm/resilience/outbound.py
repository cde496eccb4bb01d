"""The outbound URL policy: every HTTP call the server makes on a client's behalf goes here.

A client names the URLs of upstream models and workflow callbacks, so without a policy the
server is a proxy into its own network (cloud metadata at 169.254.169.254, admin ports on
loopback, the private LAN). The policy allows ``http`` and ``https`` only, no credentials in
the URL, and refuses every address that is not globally routable (loopback, private, link-local,
shared, multicast, unspecified, reserved) unless the operator opened it in
``outbound.allow_hosts`` (host names or IP literals) or ``outbound.allow_networks`` (CIDRs).

The check runs twice: on the URL when it is registered or submitted (:meth:`check_url`, a 422
naming the field), and inside the connection itself: the clients built here resolve the host,
check every address and connect to the checked address, so a DNS answer that changes between
the check and the call (rebinding) and a redirect to a private host are refused the same way.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

import anyio
import httpcore
import httpx

from open_autoglm.config import Settings
from open_autoglm.errors import OutboundRefusedError

__all__ = [
    "REFUSED_BY_POLICY",
    "OutboundPolicy",
    "Resolver",
    "outbound_policy",
]

REFUSED_BY_POLICY: Final = "refused by policy"
_SCHEMES: Final = frozenset({"http", "https"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# resolver(host, port) -> the addresses a connection to host could reach
Resolver = Callable[[str, int], list[str]]


def _system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class OutboundPolicy:
    """Which hosts outbound calls may reach; builds the HTTP clients that enforce it.

    Args:
        allow_hosts: host names or IP literals opened whatever they resolve to.
        allow_networks: CIDRs whose addresses are opened (``127.0.0.0/8`` for a test).
        resolve: ``resolve(host, port)`` lists a host's addresses (default: the system's).
    """

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    resolve: Resolver = field(default=_system_resolve, compare=False, repr=False)

    @classmethod
    def from_lists(
        cls, hosts: Iterable[str] = (), networks: Iterable[str] = (), **kw: Any
    ) -> OutboundPolicy:
        return cls(
            frozenset(h.strip().lower().strip("[]") for h in hosts),
            tuple(ipaddress.ip_network(n, strict=False) for n in networks),
            **kw,
        )

    # -- checks ------------------------------------------------------------------------------

    def parse(
        self, url: str, *, loc: Sequence[str | int] = ("url",), base: bool = False
    ) -> SplitResult:
        """Static checks on ``url`` (scheme, host, no credentials; no query or fragment for a
        ``base``); raise :class:`OutboundRefusedError` naming ``loc``."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise self._refused(loc, f"not a valid URL: {exc}") from None
        if parts.scheme.lower() not in _SCHEMES:
            raise self._refused(loc, "only http and https URLs are allowed")
        if not parts.hostname:
            raise self._refused(loc, "the URL needs a host")
        if parts.username is not None or parts.password is not None:
            raise self._refused(loc, "credentials in the URL are not allowed")
        if base and (parts.query or parts.fragment or "?" in url or "#" in url):
            raise self._refused(loc, "a base URL takes no query or fragment")
        return parts

    def check_url(
        self, url: str, *, loc: Sequence[str | int] = ("url",), base: bool = False
    ) -> None:
        """Refuse ``url`` when its scheme, form or (resolved) host is outside the policy.

        A host that does not resolve now passes: it cannot be judged, and the connection
        checks again when the call is made.
        """
        parts = self.parse(url, loc=loc, base=base)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            self.addresses(host, port)
        except OutboundRefusedError:
            raise self._refused(loc, f"host {host!r} is not an allowed target") from None
        except OSError:
            return

    def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for ``host``; refuses if none is allowed.

        Every address the host resolves to must be allowed: a name with one public and one
        private answer is refused, so the resolver cannot pick the private one later.
        """
        name = host.lower().strip("[]")
        opened = name in self.allow_hosts
        try:
            literal: IPAddress | None = ipaddress.ip_address(name)
        except ValueError:
            literal = None
        found = [name] if literal is not None else self.resolve(name, port)
        if not found:
            raise OSError(f"{host!r} did not resolve")
        if opened:
            return found
        for address in found:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not (_is_public(ip) or any(ip in net for net in self.allow_networks)):
                raise OutboundRefusedError(
                    REFUSED_BY_POLICY, details=[{"loc": ["url"], "msg": REFUSED_BY_POLICY}]
                )
        return found

    @staticmethod
    def _refused(loc: Sequence[str | int], msg: str) -> OutboundRefusedError:
        where = ".".join(map(str, loc))
        return OutboundRefusedError(
            f"{where}: {msg}", details=[{"loc": list(loc), "msg": f"{msg} ({REFUSED_BY_POLICY})"}]
        )

    # -- clients -----------------------------------------------------------------------------

    def client(self, **kw: Any) -> httpx.Client:
        """An ``httpx.Client`` whose every connection (redirects too) passes the policy."""
        transport = httpx.HTTPTransport(trust_env=False)
        transport._pool = httpcore.ConnectionPool(  # the one seam httpx has for connecting
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_CheckedBackend(self),
        )
        return httpx.Client(transport=transport, trust_env=False, **kw)

    def async_client(self, **kw: Any) -> httpx.AsyncClient:
        """:meth:`client` for asyncio."""
        transport = httpx.AsyncHTTPTransport(trust_env=False)
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_AsyncCheckedBackend(self),
        )
        return httpx.AsyncClient(transport=transport, trust_env=False, **kw)


def outbound_policy(settings: Settings) -> OutboundPolicy:
    """The policy ``settings.outbound`` describes."""
    return OutboundPolicy.from_lists(
        settings.outbound.allow_hosts, settings.outbound.allow_networks
    )


class _CheckedBackend(httpcore.NetworkBackend):
    """Resolve, check, then connect to the checked address (TLS still verifies the name)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            found = self.policy.addresses(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return self.inner.connect_tcp(found[0], port, timeout, local_address, socket_options)

    def connect_unix_socket(self, *args: Any, **kw: Any) -> httpcore.NetworkStream:
        raise OutboundRefusedError(REFUSED_BY_POLICY)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _AsyncCheckedBackend(httpcore.AsyncNetworkBackend):
    """:class:`_CheckedBackend` for asyncio; name resolution runs off the event loop."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            found = await anyio.to_thread.run_sync(self.policy.addresses, host, port)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return await self.inner.connect_tcp(found[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, *args: Any, **kw: Any) -> httpcore.AsyncNetworkStream:
        raise OutboundRefusedError(REFUSED_BY_POLICY)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
