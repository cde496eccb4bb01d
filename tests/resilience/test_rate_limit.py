from __future__ import annotations

import asyncio

import pytest

from helpers.clock import FakeClock
from helpers.services import redis_server
from open_autoglm.api.errors import retry_after_header
from open_autoglm.ports import free_port
from open_autoglm.resilience.circuit_breaker import BreakerState
from open_autoglm.resilience.rate_limit import MemoryRateLimiter, RedisRateLimiter, refill


def test_refill_grants_the_burst_then_the_rate() -> None:
    decision, left = refill(0.0, 10.0, 10.5, rate=4, burst=10)  # half a second: 2 tokens
    assert decision.allowed and left == pytest.approx(1.0)
    decision, left = refill(0.5, 10.0, 10.0, rate=4, burst=10)
    assert not decision.allowed and decision.retry_after == pytest.approx(0.125)
    decision, left = refill(3.0, 0.0, 1e6, rate=4, burst=10)  # never above the burst
    assert decision.remaining == pytest.approx(9.0)
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"


def test_memory_limiter_per_client_burst_and_refill() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("a").allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.take("a")
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    assert limiter.take("b").allowed  # another client has its own bucket
    clock.now += 0.5
    assert limiter.take("a").allowed and not limiter.take("a").allowed
    clock.now += 100  # idle: back to the burst, not beyond
    assert [limiter.take("a").allowed for _ in range(4)] == [True, True, True, False]


def test_memory_limiter_bounds_its_clients() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(1.0, 1, max_clients=3, clock=clock)
    for key in "abcde":
        limiter.take(key)
    assert len(limiter) == 3
    # "a" was the longest idle and was dropped: it starts again with a full bucket.
    assert limiter.take("a").allowed
    assert not limiter.take("e").allowed
    with pytest.raises(ValueError):
        MemoryRateLimiter(0, 1)


def test_redis_limit_is_shared_between_replicas() -> None:
    async def scenario(url: str) -> None:
        first = RedisRateLimiter(url, 1.0, 5, prefix="t1:")
        second = RedisRateLimiter(url, 1.0, 5, prefix="t1:")
        try:
            got = [await (first, second)[i % 2].acquire("client") for i in range(8)]
            assert [d.allowed for d in got] == [True] * 5 + [False] * 3
            assert got[-1].retry_after == pytest.approx(1.0, abs=0.2)
            assert (await first.acquire("other")).allowed  # per client
            assert first.fallbacks == second.fallbacks == 0
            await asyncio.sleep(1.1)  # Redis's clock refills one token
            assert (await second.acquire("client")).allowed
            assert not (await first.acquire("client")).allowed
            ttl = await first._redis.pttl("t1:client")
            assert 0 < ttl <= 6000  # idle clients expire once their bucket would be full
        finally:
            await first.close()
            await second.close()

    with redis_server() as url:
        asyncio.run(scenario(url))


def test_redis_down_limits_locally_and_fails_fast(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(url: str) -> None:
        # A reset timeout no run outlasts: the breaker stays open for the whole scenario.
        limiter = RedisRateLimiter(
            url, 1.0, 3, timeout_s=0.2, failure_threshold=2, reset_timeout_s=600
        )
        try:
            got = [await limiter.acquire("client") for _ in range(5)]
            # Decided by the in-memory buckets: the same limit, not an error, not unlimited.
            assert [d.allowed for d in got] == [True, True, True, False, False]
            assert limiter.fallbacks == 5
            assert limiter.breaker.state is BreakerState.OPEN
            # Only the calls before the breaker opened waited on the dead Redis: two tried it
            # (one warning each), the other three were turned away without a connection.
            assert limiter.breaker.rejected == 3
            assert caplog.text.count("limiting locally") == 2
        finally:
            await limiter.close()

    # Nothing listens there; the password must not reach the log.
    asyncio.run(scenario(f"redis://:hunter2@127.0.0.1:{free_port()}/0"))
    assert "limiting locally" in caplog.text and "hunter2" not in caplog.text
