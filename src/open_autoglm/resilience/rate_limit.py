"""Token-bucket rate limits per client, in memory or shared between replicas through Redis.

A client's bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a
request takes one token or is refused with the time until one is back. The state per client
is two numbers (tokens, last refill), so:

- :class:`MemoryRateLimiter` keeps them in a dict (one server process; past ``max_clients``
  the longest-idle client's bucket is dropped: a missing bucket reads as a full one, which
  an idle client's has become by then).
- :class:`RedisRateLimiter` keeps them in a Redis hash per client and updates it in one Lua
  script (atomic, Redis's own clock, so replicas on hosts with drifting clocks agree), with an
  expiry so idle clients cost nothing. Several API replicas then share one limit per client.
  If Redis fails, requests are limited by the replica's in-memory buckets instead of failing
  or going unlimited, and a :class:`~open_autoglm.resilience.circuit_breaker.CircuitBreaker`
  keeps a dead Redis from costing every request a timeout.

The API applies it in ``api/middleware.py`` (``RateLimitMiddleware``). Written here rather
than taken from a library: the limit is two numbers and one script, and the libraries that
exist are per-framework decorators without the Redis-down fallback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from open_autoglm.resilience.circuit_breaker import CircuitBreaker

__all__ = [
    "Decision",
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "refill",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: float  # tokens left after this request
    retry_after: float  # seconds until a token is back (0 when allowed)


def refill(
    tokens: float, updated: float, now: float, *, rate: float, burst: float, cost: float = 1.0
) -> tuple[Decision, float]:
    """One bucket step: the decision and the tokens left, given the state at ``updated``."""
    tokens = min(burst, tokens + max(0.0, now - updated) * rate)
    if tokens >= cost:
        return Decision(True, tokens - cost, 0.0), tokens - cost
    return Decision(False, tokens, (cost - tokens) / rate), tokens


class RateLimiter(Protocol):
    rate: float
    burst: float

    async def acquire(self, key: str, cost: float = 1.0) -> Decision: ...


class MemoryRateLimiter:
    """Buckets in this process. ``max_clients`` bounds memory: past it, the longest-idle
    client's bucket is dropped (it has refilled by then unless the limit is very slow)."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, cost: float = 1.0) -> Decision:
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.pop(key, (self.burst, now))
            decision, left = refill(
                tokens, updated, now, rate=self.rate, burst=self.burst, cost=cost
            )
            self._buckets[key] = (left, now)  # most recently used last
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return decision

    async def acquire(self, key: str, cost: float = 1.0) -> Decision:
        return self.take(key, cost)

    def __len__(self) -> int:
        return len(self._buckets)


# KEYS[1] the client's hash; ARGV: rate, burst, cost. Returns {allowed, remaining, retry_after}
# as strings (Lua numbers lose their fraction on the way back). Redis's TIME is the clock.
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens), tostring(retry)}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every replica pointing at the same ``url`` and ``prefix``.

    ``timeout_s`` bounds each call; on a Redis error (or while the breaker is open after
    ``failure_threshold`` of them) the request is decided by an in-memory limiter with the
    same rate and burst.
    """

    def __init__(
        self,
        url: str,
        rate: float,
        burst: float,
        *,
        prefix: str = "autoglm:ratelimit:",
        timeout_s: float = 0.25,
        failure_threshold: int = 3,
        reset_timeout_s: float = 5.0,
        client: Any = None,
    ) -> None:
        self.fallback = MemoryRateLimiter(rate, burst)  # validates rate and burst
        self.rate = rate
        self.burst = burst
        self.prefix = prefix
        self.where = _redacted(url)  # for logs: never the password
        if client is None:
            try:
                import redis.asyncio as aioredis
            except ImportError as exc:  # optional dependency: say how to get it
                raise RuntimeError(
                    "a Redis rate limit needs the redis package (pip install 'redis>=5')"
                ) from exc
            client = aioredis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        self._redis = client
        self._script = client.register_script(_SCRIPT)
        self.breaker = CircuitBreaker(
            failure_threshold=failure_threshold, reset_timeout_s=reset_timeout_s
        )
        self.fallbacks = 0  # requests decided locally because Redis was not answering

    async def acquire(self, key: str, cost: float = 1.0) -> Decision:
        if self.breaker.allow():
            try:
                allowed, remaining, retry = await self._script(
                    keys=[self.prefix + key], args=[self.rate, self.burst, cost]
                )
            except Exception as exc:  # any Redis failure: decide locally, never fail the request
                self.breaker.record_failure()
                log.warning(
                    "rate limit: Redis at %s failed (%s); limiting locally", self.where, exc
                )
            else:
                self.breaker.record_success()
                return Decision(bool(int(allowed)), float(remaining), float(retry))
        self.fallbacks += 1
        return self.fallback.take(key, cost)

    async def close(self) -> None:
        await self._redis.aclose()


def _redacted(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
