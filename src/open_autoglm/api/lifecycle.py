"""Request and server lifecycles: work a client abandons stops, streams per client are
bounded, and SIGTERM drains for a grace period instead of waiting for ever.

- :func:`follow` waits for an online task's outcome while watching the client's
  connection; a client that disconnects (or a request the server cancels at the end of its
  grace period) cancels the task, which frees its CPU slot at once.
- :class:`StreamSlots` counts open event streams per client (API key, else address); one
  more than ``api.lifecycle.max_streams_per_client`` is a 429 ``too_many_streams``.
- :class:`GracefulServer` is uvicorn's server with a bounded drain: on SIGTERM it stops
  accepting, lets in-flight requests and running tasks finish for
  ``api.lifecycle.shutdown_grace_s``, cancels what is still in flight, and stops the
  runtime, whose unfinished durable tasks re-queue on the next start (as after a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import uvicorn
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from open_autoglm.api.middleware import scope_client
from open_autoglm.config import Settings
from open_autoglm.errors import ConflictError, TooManyStreamsError
from open_autoglm.runtime import Runtime

__all__ = [
    "ClientGone",
    "CountedStreamingResponse",
    "GracefulServer",
    "StreamSlots",
    "follow",
    "serve",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was ready; nobody reads the response."""


async def _disconnected(request: Request) -> None:
    """Return once the client's connection is gone (the request body was read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def follow(request: Request, done: Future[T], cancel: Callable[[], Any]) -> T:
    """``done``'s result, or ``cancel()`` and :class:`ClientGone` if the client goes first.

    Also cancels when this request itself is cancelled (uvicorn does so to requests still
    in flight when the shutdown grace period ends), then re-raises.
    """
    outcome = asyncio.wrap_future(done)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((outcome, gone), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        _cancel_quietly(cancel)
        raise
    finally:
        gone.cancel()
    if outcome.done():
        return outcome.result()
    outcome.cancel()  # the asyncio side only: the task is cancelled below
    _cancel_quietly(cancel)
    raise ClientGone


def _cancel_quietly(cancel: Callable[[], Any]) -> None:
    with contextlib.suppress(ConflictError):  # finished meanwhile
        cancel()


class StreamSlots:
    """Open event streams per client, bounded by ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()
        self.refused = 0
        # per client, an event per open stream: set when the client's key is revoked here
        self._revoked: dict[str, set[asyncio.Event]] = {}

    def acquire(self, client: str) -> Callable[[], None]:
        """Take a slot for ``client``; the returned callable gives it back (once)."""
        if self.open[client] >= self.limit:
            self.refused += 1
            raise TooManyStreamsError(
                f"client {client} already has {self.limit} open streams "
                "(api.lifecycle.max_streams_per_client); close one first",
                retry_after=1.0,
            )
        self.open[client] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.open[client] -= 1
            if self.open[client] <= 0:
                del self.open[client]

        return release

    def stream(self, request: Request, content: Any, **kwargs: Any) -> CountedStreamingResponse:
        """A streaming response holding one of the requesting client's slots while it runs.

        The stream ends when the client's API key is revoked: at once when that happens on
        this server (:meth:`revoke`), else at its next frame (keep-alives come every 15 s)
        once the key ring has reloaded.
        """
        client = scope_client(request.scope)
        release = self.acquire(client)
        revoked = asyncio.Event()
        events = self._revoked.setdefault(client, set())
        events.add(revoked)

        def forget() -> None:
            events.discard(revoked)
            if not events and self._revoked.get(client) is events:
                del self._revoked[client]
            release()

        state = request.scope.get("state") or {}
        principal = state.get("principal")
        ring = getattr(request.app.state.runtime, "services", {}).get("keys")

        def valid() -> bool:
            return ring is None or principal is None or ring.active(principal)

        return CountedStreamingResponse(
            _until_revoked(content, revoked, valid), release=forget, **kwargs
        )

    def revoke(self, client: str) -> int:
        """End every open stream of ``client`` (its key was revoked); returns how many."""
        events = self._revoked.get(client, set())
        for event in events:
            event.set()
        return len(events)


REVOKED_FRAME = b'event: end\ndata: {"reason": "api key revoked"}\n\n'


async def _until_revoked(
    content: Any, revoked: asyncio.Event, valid: Callable[[], bool]
) -> AsyncIterator[Any]:
    """``content``'s chunks until ``revoked`` is set or ``valid()`` turns false."""
    chunks = content.__aiter__()
    stop = asyncio.ensure_future(revoked.wait())
    try:
        while True:
            step = asyncio.ensure_future(chunks.__anext__())
            await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():  # revoked while waiting for the next chunk
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                yield REVOKED_FRAME
                return
            try:
                chunk = step.result()
            except StopAsyncIteration:
                return
            if revoked.is_set() or not valid():
                yield REVOKED_FRAME
                return
            yield chunk
    finally:
        stop.cancel()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


class CountedStreamingResponse(StreamingResponse):
    """A streaming response that gives its stream slot back however it ends."""

    def __init__(self, content: Any, *, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def stream_slots(request: Request) -> StreamSlots:
    """The app's stream slots (made on first use from the runtime's settings)."""
    state = request.app.state
    slots: StreamSlots | None = getattr(state, "stream_slots", None)
    if slots is None:
        runtime: Runtime = state.runtime
        slots = StreamSlots(runtime.settings.api.lifecycle.max_streams_per_client)
        state.stream_slots = slots
    return slots


class GracefulServer(uvicorn.Server):
    """uvicorn's server; on SIGTERM the runtime starts draining as connections do. The banner
    is printed once the socket accepts connections, not before the app is built."""

    def __init__(
        self, config: uvicorn.Config, runtime: Runtime, grace_s: float, banner: str = ""
    ) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.grace_s = grace_s
        self.banner = banner

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started and self.banner:
            print(f"{self.banner}  (ready: accepting connections)", flush=True)

    async def shutdown(self, sockets: Any = None) -> None:
        self.runtime.begin_drain(self.grace_s)
        await super().shutdown(sockets)


def serve(settings: Settings, host: str, port: int, *, banner: str = "") -> None:
    """Run the API on ``host:port`` with the connection guards and the bounded drain."""
    from open_autoglm.api.app import create_app
    from open_autoglm.api.connections import ConnectionGuard, guarded_protocol

    runtime = Runtime(settings)
    lifecycle = settings.api.lifecycle
    config = uvicorn.Config(
        create_app(runtime=runtime),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # Each response's head and body in one write (api/http.py), with read deadlines and
        # a per-address connection cap (api/connections.py).
        http=guarded_protocol(ConnectionGuard(lifecycle)),
        timeout_graceful_shutdown=lifecycle.shutdown_grace_s,  # type: ignore[arg-type]
    )
    GracefulServer(config, runtime, lifecycle.shutdown_grace_s, banner).run()
