"""Forward OpenAI-style requests to an upstream OpenAI-compatible server, behind a breaker
and a bulkhead.

The breaker (``resilience/circuit_breaker.py``) and the bulkhead (``resilience/bulkhead.py``)
decide; this shell does the I/O. Transport errors, timeouts and 5xx answers count as
failures; anything else (including the client's own 4xx mistakes) counts as a success. While
the circuit is open a call raises :class:`~open_autoglm.errors.CircuitOpenError` (a 503 with
``Retry-After``) at once, without touching the network. A slow upstream holds at most its
bulkhead's slots (``max_concurrency``, from the source or ``models.upstream_max_concurrency``):
calls beyond them wait in a bounded line, then get
:class:`~open_autoglm.errors.BulkheadFullError` (429), and never hold every worker thread
and connection of the server.

What a client may make the server send is bounded here too: the key comes from the operator's
:class:`UpstreamSecrets` by name, every connection goes through the
:class:`~open_autoglm.resilience.outbound.OutboundPolicy`, the paths are the fixed OpenAI ones
under the registered base URL, and an upstream's error body is logged, never relayed (the
client gets the status and a generic message): an upstream is not a way to read a server.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import httpx
import orjson

from open_autoglm.config import ModelSettings
from open_autoglm.errors import CircuitOpenError, UnavailableError, ValidationError
from open_autoglm.resilience.bulkhead import Bulkhead
from open_autoglm.resilience.circuit_breaker import BreakerState, CircuitBreaker
from open_autoglm.resilience.outbound import OutboundPolicy
from open_autoglm.spec.model import UpstreamSource

__all__ = ["Upstream", "UpstreamSecrets", "upstream_bulkhead"]

log = logging.getLogger(__name__)
_LOGGED_BODY = 2000  # characters of an upstream's error body kept in the server log


class UpstreamSecrets:
    """The keys upstream models may use, by name: the operator's map, then the environment
    variables the operator listed. Nothing else is ever read on a client's behalf.

    Args:
        secrets: name -> key (``models.upstream_secrets``).
        env_names: variables a name may refer to (``models.upstream_key_envs``).
        environ: where those variables are read (the process environment).
    """

    def __init__(
        self,
        secrets: Mapping[str, str] | None = None,
        env_names: Collection[str] = (),
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._secrets = dict(secrets or {})
        self._env_names = frozenset(env_names)
        self._environ = environ

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> UpstreamSecrets:
        return cls(
            {k: v.get_secret_value() for k, v in settings.upstream_secrets.items()},
            settings.upstream_key_envs,
        )

    def known(self, name: str) -> bool:
        return name in self._secrets or name in self._env_names

    def check(self, name: str | None) -> None:
        """Refuse a name the operator did not configure (422 at ``source.api_key``)."""
        if name is None or self.known(name):
            return
        msg = (
            f"no upstream key named {name!r} is configured on this server (the operator sets "
            "models.upstream_secrets or models.upstream_key_envs)"
        )
        raise ValidationError(msg, details=[{"loc": ["source", "api_key"], "msg": msg}])

    def value(self, name: str | None) -> str | None:
        if name is None:
            return None
        if name in self._secrets:
            return self._secrets[name]
        if name in self._env_names:
            return self._environ.get(name)
        raise UnavailableError(f"upstream key {name!r} is no longer configured on this server")


def upstream_bulkhead(name: str, source: UpstreamSource, settings: ModelSettings) -> Bulkhead:
    """The bulkhead of one upstream model: the source's own bounds where it sets them, else
    the server's (``models.upstream_max_*``)."""
    return Bulkhead(
        name,
        source.max_concurrency or settings.upstream_max_concurrency,
        max_waiting=(
            settings.upstream_max_waiting if source.max_waiting is None else source.max_waiting
        ),
        max_wait_s=settings.upstream_max_wait_s,
    )


def _once(release: Callable[[], None]) -> Callable[[], None]:
    """``release`` made safe to call from several places: only the first call runs it."""
    lock, done = threading.Lock(), [False]

    def call() -> None:
        with lock:
            if done[0]:
                return
            done[0] = True
        release()

    return call


class Upstream:
    """One upstream model: its source, breaker, bulkhead and the forwarding calls."""

    def __init__(
        self,
        name: str,
        source: UpstreamSource,
        breaker: CircuitBreaker,
        bulkhead: Bulkhead,
        *,
        policy: OutboundPolicy | None = None,
        secrets: UpstreamSecrets | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.breaker = breaker
        self.bulkhead = bulkhead
        self.policy = policy or OutboundPolicy()
        self.secrets = secrets or UpstreamSecrets()

    def _headers(self) -> dict[str, str]:
        key = self.secrets.value(self.source.api_key)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _url(self, path: str) -> str:
        return self.source.base_url.rstrip("/") + path

    def _body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.source.model}

    def _timeout(self) -> httpx.Timeout:
        t = self.source.timeout_s
        return httpx.Timeout(t, connect=min(5.0, t))

    def _client(self) -> httpx.AsyncClient:
        return self.policy.async_client(timeout=self._timeout())

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
            async with self.bulkhead.aslot(), self._client() as client:
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
        try:
            with self.bulkhead.slot(), self.policy.client(timeout=self._timeout()) as client:
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
        """Count the answer against the breaker; (status, decoded JSON or a generic error)."""
        self._settle(resp.status_code)
        if resp.status_code >= 400:
            return resp.status_code, self._error_body(resp.status_code, resp.text)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            log.warning("upstream for model %s answered non-JSON: %.200s", self.name, resp.text)
            return 502, self._error_body(502, "")

    def _error_body(self, status: int, text: str) -> dict[str, Any]:
        """The generic error a client sees for an upstream's error; its body goes to the log."""
        log.warning("upstream for model %s answered %d: %s", self.name, status, text[:_LOGGED_BODY])
        return {
            "error": {
                "message": f"upstream for model {self.name!r} answered {status}",
                "type": "upstream_error",
                "code": status,
            }
        }

    async def stream(self, path: str, body: dict[str, Any]) -> tuple[int, AsyncIterator[bytes]]:
        """Open a streaming POST; returns (status, raw SSE bytes) once the headers are in.

        The stream holds its bulkhead slot until it ends (or its reader stops reading)."""
        self._admit()
        await self.bulkhead.enter_async()
        leave = _once(self.bulkhead.leave)
        client = self._client()
        try:
            request = client.build_request(
                "POST", self._url(path), json=self._body(body), headers=self._headers()
            )
            resp = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            leave()
            await client.aclose()
            raise self._unreachable(exc) from exc
        except BaseException:  # cancelled while connecting: the slot goes back all the same
            leave()
            await client.aclose()
            raise

        if resp.status_code >= 400:
            head = b""
            try:
                async for chunk in resp.aiter_raw():
                    head += chunk
                    if len(head) >= _LOGGED_BODY:
                        break
            except httpx.HTTPError:
                pass
            finally:
                leave()
                await resp.aclose()
                await client.aclose()
            self._settle(resp.status_code)
            error = orjson.dumps(
                self._error_body(resp.status_code, head.decode("utf-8", "replace"))
            )

            async def refused() -> AsyncIterator[bytes]:
                yield error

            return resp.status_code, refused()

        async def relay() -> AsyncIterator[bytes]:
            ok = resp.status_code < 500
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            except httpx.HTTPError:
                ok = False  # died mid-stream: the client sees a cut stream
            finally:
                leave()
                await resp.aclose()
                await client.aclose()
                self._settle(200 if ok else None)

        chunks = relay()
        # A stream dropped before its first read never runs its ``finally``: the slot comes
        # back when the generator is collected.
        weakref.finalize(chunks, leave)
        return resp.status_code, chunks

    def state(self) -> dict[str, Any]:
        state = self.breaker.state
        return {
            "base_url": self.source.base_url,
            "circuit": state.value,
            "open": state is BreakerState.OPEN,
            "rejected": self.breaker.rejected,
            "transitions": len(self.breaker.transitions),
            "bulkhead": self.bulkhead.stats(),
        }
