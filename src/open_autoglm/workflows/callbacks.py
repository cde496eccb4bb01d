"""Signed webhook callbacks: HMAC-SHA256 signing, verification and delivery with retries.

A callback is a JSON POST. When a secret is set, two headers let the receiver check that the
platform sent it and that it is fresh::

    X-AutoGLM-Timestamp: 1732464000
    X-AutoGLM-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

Signing the timestamp with the body stops replays outside the tolerance window
(:func:`verify_signature`). :func:`deliver_callback` retries 5xx, 408, 429 and network
errors with exponential backoff, re-signing each attempt, and returns every attempt so the
adapter can store them next to the run.

Delivery connects through the outbound URL policy (``resilience/outbound.py``). A target it
refuses is recorded as ``refused by policy`` and never retried: no status, timing or error
detail that would tell a client what listens at an address it may not reach.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

import httpx

from open_autoglm.errors import OutboundRefusedError
from open_autoglm.resilience.outbound import REFUSED_BY_POLICY, OutboundPolicy

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryAttempt",
    "callback_body",
    "deliver_callback",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "X-AutoGLM-Signature"
TIMESTAMP_HEADER: Final = "X-AutoGLM-Timestamp"
_RETRY_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class DeliveryAttempt:
    attempt: int
    status: int | None  # HTTP status, None when no response came back
    error: str | None
    timestamp: float  # wall-clock seconds when the attempt started
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def callback_body(payload: Mapping[str, Any]) -> bytes:
    """Serialise a payload the same way every time (sorted keys, compact)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(secret: str, timestamp: str, body: bytes) -> str:
    message = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Return the two signature headers for ``body``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: f"sha256={_digest(secret, ts, body)}"}


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when the headers sign ``body`` with ``secret`` within ``tolerance_s`` of ``now``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ts = lowered.get(TIMESTAMP_HEADER.lower(), "")
    sig = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not ts.isdigit() or not sig.startswith("sha256="):
        return False
    current = time.time() if now is None else now
    if abs(current - int(ts)) > tolerance_s:
        return False
    return hmac.compare_digest(sig[len("sha256=") :], _digest(secret, ts, body))


def deliver_callback(
    url: str,
    payload: Mapping[str, Any],
    secret: str | None = None,
    *,
    max_attempts: int = 5,
    backoff_s: float = 0.5,
    backoff_factor: float = 2.0,
    max_backoff_s: float = 30.0,
    timeout_s: float = 10.0,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    wall_clock: Callable[[], float] = time.time,
    event: str = "",
    on_attempt: Callable[[DeliveryAttempt, bool], None] | None = None,
    policy: OutboundPolicy | None = None,
) -> list[DeliveryAttempt]:
    """POST ``payload`` until a 2xx or a non-retryable answer; return every attempt.

    The last attempt's ``ok`` tells whether delivery succeeded. A 4xx other than 408/425/429
    stops at once: the receiver rejected the call and sending it again will not help.
    ``on_attempt(attempt, final)`` is called after each attempt (``final``: no more will
    follow), so a caller can store attempts as they happen rather than at the end.
    ``policy`` is the outbound URL policy (default: public addresses only); a ``client`` given
    by the caller is used as it is.
    """
    body = callback_body(payload)
    attempts: list[DeliveryAttempt] = []
    policy = policy or OutboundPolicy()
    try:
        policy.parse(url, loc=("callback_url",))
    except OutboundRefusedError:
        first = DeliveryAttempt(1, None, REFUSED_BY_POLICY, wall_clock(), 0.0)
        if on_attempt is not None:
            on_attempt(first, True)
        return [first]
    own = client is None
    http = client if client is not None else policy.client(timeout=timeout_s)
    try:
        for n in range(1, max_attempts + 1):
            headers = {"Content-Type": "application/json", "User-Agent": "open-autoglm-callback"}
            if event:
                headers["X-AutoGLM-Event"] = event
            started = wall_clock()
            if secret:
                headers |= sign(body, secret, int(started))
            t0 = time.perf_counter()
            status: int | None = None
            error: str | None = None
            refused = False
            try:
                response = http.post(url, content=body, headers=headers, timeout=timeout_s)
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except OutboundRefusedError:
                refused, error = True, REFUSED_BY_POLICY
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            took = 0.0 if refused else time.perf_counter() - t0
            attempts.append(DeliveryAttempt(n, status, error, started, took))
            retryable = not refused and (status is None or status in _RETRY_STATUSES)
            final = attempts[-1].ok or not retryable or n == max_attempts
            if on_attempt is not None:
                on_attempt(attempts[-1], final)
            if final:
                break
            sleep(min(max_backoff_s, backoff_s * backoff_factor ** (n - 1)))
    finally:
        if own:
            http.close()
    return attempts
