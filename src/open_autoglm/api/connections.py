"""Connection-level guards: header and body read deadlines and a per-address connection cap.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) but has no deadline
for a request's head or body: a client that sends one byte every few seconds ("slowloris")
holds its connection, and a file descriptor, for ever, and uvicorn's ``h11`` settings
(``h11_max_incomplete_event_size``) bound the head's size, not its time. Neither does it
bound connections per client (``limit_concurrency`` is server-wide). These guards live in
the HTTP protocol, below the ASGI app, because that is the only layer that sees a
connection before its request is complete:

- the request line and headers must arrive within ``header_timeout_s`` of the connection
  opening (or of the previous response on a keep-alive connection), and the body within
  ``body_timeout_s`` of the headers: a deadline, not an idle timer, so dribbling bytes does
  not extend it. Late connections get ``408`` and are closed;
- one client address may hold ``max_connections_per_client`` connections; one more is
  answered ``429 too_many_connections`` and closed.

:func:`guarded_protocol` builds the protocol class that ``autoglm serve`` hands uvicorn
(``http=``), on top of :class:`~open_autoglm.api.http.CoalescingHttpToolsProtocol`.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from typing import Any, ClassVar

import orjson

from open_autoglm.api.http import CoalescingHttpToolsProtocol
from open_autoglm.config import LifecycleSettings

__all__ = ["ConnectionGuard", "GuardedHttpToolsProtocol", "ReadPhase", "guarded_protocol"]


class ReadPhase(enum.Enum):
    """What a connection is waiting for from its client."""

    HEAD = "head"  # a request line and headers
    BODY = "body"  # the rest of a request's body


class ConnectionGuard:
    """The deadlines and the open connections per client address (one per server)."""

    def __init__(self, settings: LifecycleSettings) -> None:
        self.settings = settings
        self.open_by_host: Counter[str] = Counter()
        self.refused = 0  # connections answered 429 (over the per-address cap)
        self.timed_out = 0  # connections closed by a header or body deadline

    def admit(self, host: str) -> bool:
        """Count a new connection from ``host``; False when it is one over the cap."""
        if self.open_by_host[host] >= self.settings.max_connections_per_client:
            self.refused += 1
            return False
        self.open_by_host[host] += 1
        return True

    def release(self, host: str) -> None:
        self.open_by_host[host] -= 1
        if self.open_by_host[host] <= 0:
            del self.open_by_host[host]

    def deadline(self, phase: ReadPhase) -> float:
        s = self.settings
        return s.header_timeout_s if phase is ReadPhase.HEAD else s.body_timeout_s


def _plain_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message, "details": []}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


# A refused connection reads (and drops) what its client sends for this long before closing,
# so the client gets the 429 instead of a reset for unread data.
_LINGER_S = 0.5


class GuardedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionGuard`'s deadlines and cap."""

    guard: ClassVar[ConnectionGuard]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._host = self.client[0] if self.client else "unknown"
        self._counted = self.guard.admit(self._host)
        if not self._counted:
            cap = self.guard.settings.max_connections_per_client
            self.transport.write(
                _plain_response(
                    429,
                    "Too Many Requests",
                    "too_many_connections",
                    f"client {self._host} already has {cap} open connections "
                    "(api.lifecycle.max_connections_per_client)",
                )
            )
            self.loop.call_later(_LINGER_S, self.transport.close)
            return
        self._arm(ReadPhase.HEAD)

    def data_received(self, data: bytes) -> None:
        if self._counted:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self.guard.release(self._host)
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm(ReadPhase.BODY)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request (none pipelined): its head has a deadline too.
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._arm(ReadPhase.HEAD)

    def _arm(self, phase: ReadPhase) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.guard.deadline(phase), self._expired, phase)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, phase: ReadPhase) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        self.guard.timed_out += 1
        cycle: Any = self.cycle
        if cycle is None or not cycle.response_started:
            limit = self.guard.deadline(phase)
            self.transport.write(
                _plain_response(
                    408,
                    "Request Timeout",
                    "request_timeout",
                    f"the request's {phase.value} did not arrive within {limit:g} s",
                )
            )
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() sees a disconnect
            cycle.message_event.set()
        self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``guard``."""
    return type("BoundGuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})
