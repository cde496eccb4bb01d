"""Forward OpenAI-style requests to an upstream OpenAI-compatible server, behind a breaker.

The breaker (``resilience/circuit_breaker.py``) decides; this shell does the I/O. Transport
errors, timeouts and 5xx answers count as failures; anything else (including the client's own
4xx mistakes) counts as a success. While the circuit is open a call raises
:class:`~open_autoglm.errors.CircuitOpenError` (a 503 with ``Retry-After``) at once, without touching the network.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

from open_autoglm.errors import CircuitOpenError, UnavailableError
from open_autoglm.resilience.circuit_breaker import BreakerState, CircuitBreaker
from open_autoglm.spec.model import UpstreamSource

__all__ = ["Upstream"]


class Upstream:
    """One upstream model: its source, breaker and the forwarding calls."""

    def __init__(self, name: str, source: UpstreamSource, breaker: CircuitBreaker) -> None:
        self.name = name
        self.source = source
        self.breaker = breaker

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.source.api_key_env) if self.source.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _url(self, path: str) -> str:
        return self.source.base_url.rstrip("/") + path

    def _body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.source.model}

    def _client(self) -> httpx.AsyncClient:
        t = self.source.timeout_s
        return httpx.AsyncClient(timeout=httpx.Timeout(t, connect=min(5.0, t)))

    def _admit(self) -> None:
        if not self.breaker.allow():
            raise CircuitOpenError(
                f"upstream for model {self.name!r} is failing; circuit open, not trying "
                f"({self.source.base_url})",
                retry_after=self.breaker.retry_after(),
            )

    def _settle(self, status: int | None) -> None:
        if status is None or status >= 500:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST ``body`` (model renamed to the upstream's); returns (status, decoded JSON)."""
        self._admit()
        try:
            async with self._client() as client:
                resp = await client.post(
                    self._url(path), json=self._body(body), headers=self._headers()
                )
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        status, data = self._settled(resp)
        if isinstance(data, dict) and "model" in data:
            data["model"] = self.name
        return status, data

    def post_sync(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """:meth:`post` for worker threads (task handlers), same breaker accounting."""
        self._admit()
        t = self.source.timeout_s
        try:
            with httpx.Client(timeout=httpx.Timeout(t, connect=min(5.0, t))) as client:
                resp = client.post(self._url(path), json=self._body(body), headers=self._headers())
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return self._settled(resp)

    def _unreachable(self, exc: httpx.HTTPError) -> UnavailableError:
        """Count a transport failure against the breaker; the error to raise for it."""
        self._settle(None)
        return UnavailableError(
            f"upstream for model {self.name!r} unreachable: {type(exc).__name__}"
        )

    def _settled(self, resp: httpx.Response) -> tuple[int, Any]:
        """Count the answer against the breaker; (status, decoded JSON or an error body)."""
        self._settle(resp.status_code)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, {
                "error": {"message": resp.text[:500], "type": "upstream_error"}
            }

    async def stream(self, path: str, body: dict[str, Any]) -> tuple[int, AsyncIterator[bytes]]:
        """Open a streaming POST; returns (status, raw SSE bytes) once the headers are in."""
        self._admit()
        client = self._client()
        try:
            request = client.build_request(
                "POST", self._url(path), json=self._body(body), headers=self._headers()
            )
            resp = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await client.aclose()
            raise self._unreachable(exc) from exc

        async def relay() -> AsyncIterator[bytes]:
            ok = resp.status_code < 500
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            except httpx.HTTPError:
                ok = False  # died mid-stream: the client sees a cut stream
            finally:
                await resp.aclose()
                await client.aclose()
                self._settle(200 if ok else None)

        return resp.status_code, relay()

    def state(self) -> dict[str, Any]:
        state = self.breaker.state
        return {
            "base_url": self.source.base_url,
            "circuit": state.value,
            "open": state is BreakerState.OPEN,
            "rejected": self.breaker.rejected,
            "transitions": len(self.breaker.transitions),
        }
