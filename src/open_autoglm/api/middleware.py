"""ASGI middleware: request body bound, per-client rate limits, and the direct route table
for the hottest endpoints (API-key authentication is ``api/auth.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from open_autoglm.api.errors import retry_after_header
from open_autoglm.resilience.rate_limit import RateLimiter

__all__ = [
    "BodyLimitMiddleware",
    "DirectRoutes",
    "Endpoint",
    "RateLimitGate",
    "RateLimitMiddleware",
    "scope_client",
]


async def _reject(
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message, "details": details or []}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def scope_client(scope: Scope) -> str:
    """Who is asking: ``key:<fingerprint>`` once an API key was checked, else ``ip:<host>``."""
    state = scope.get("state") or {}
    if "client_id" in state:
        return str(state["client_id"])
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``, by Content-Length or as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await _reject(
                        send,
                        413,
                        "payload_too_large",
                        f"request body exceeds {self.max_bytes} bytes",
                    )
                    return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited, tracking_send)
        except _TooLarge:
            if not started:
                await _reject(
                    send, 413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes"
                )


class _TooLarge(Exception):
    pass


class RateLimitGate:
    """The limiter the middleware asks, and what it refused (for /metrics)."""

    def __init__(self, limiter: RateLimiter | None) -> None:
        self.limiter = limiter
        self.limited = 0

    async def close(self) -> None:
        close = getattr(self.limiter, "close", None)
        if close is not None:
            await close()


class RateLimitMiddleware:
    """429 ``rate_limited`` with ``Retry-After`` once a client has spent its burst.

    Runs inside :class:`~open_autoglm.api.auth.AuthMiddleware`, so a client is its API key when keys are configured
    (its IP otherwise), and a request without a valid key is refused before it costs a token.
    Health checks and /metrics are never limited.
    """

    OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, gate: RateLimitGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.gate.limiter
        if limiter is None or scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        client = scope_client(scope)
        decision = await limiter.acquire(client)
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        self.gate.limited += 1
        limit = f"{limiter.rate:g} requests/s, burst {limiter.burst:g}"
        await _reject(
            send,
            429,
            "rate_limited",
            f"rate limit exceeded for client {client} ({limit}); retry in "
            f"{decision.retry_after:.2f} s",
            details=[{"loc": ["client"], "msg": f"over {limit}"}],
            headers=[(b"retry-after", retry_after_header(decision.retry_after).encode())],
        )


Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """The hottest endpoints, called without FastAPI's router.

    FastAPI matches a request against its included routers one after the other (with scope
    bookkeeping for every candidate route), then wraps the endpoint in dependency solving
    and exception handling, a large share of the server process's CPU on the hottest
    routes. The endpoints given here take a ``Request``,
    return a ``Response``, declare no dependencies and answer their own errors, so this
    middleware, innermost (inside the API key, rate limit and body bound), calls them
    directly for an exact method and path. Every other request, and every request under a
    ``root_path``, goes through the router; the routes stay declared there too (OpenAPI,
    the same endpoint functions), which ``tests/api/test_direct_routes.py`` checks.

    Args:
        routes: ``(method, path) -> endpoint``, the endpoint already wrapped in its error
            handling.
    """

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            endpoint = self.routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
