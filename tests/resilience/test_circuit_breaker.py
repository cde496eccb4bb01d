from __future__ import annotations

import pytest

from helpers.clock import FakeClock
from open_autoglm.resilience.circuit_breaker import (
    TRANSITIONS,
    BreakerState,
    CircuitBreaker,
    Transition,
)

C, OPEN, H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def make(**kw: object) -> tuple[CircuitBreaker, FakeClock, list[Transition]]:
    clock, seen = FakeClock(), []
    b = CircuitBreaker(clock=clock, on_transition=seen.append, **kw)  # type: ignore[arg-type]
    return b, clock, seen


def test_opens_after_consecutive_failures_only() -> None:
    b, _, seen = make(failure_threshold=3, reset_timeout_s=5)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert b.state is C and b.allow()
    b.record_failure()
    assert b.state is OPEN
    assert [(t.source, t.target) for t in seen] == [(C, OPEN)]
    assert not b.allow() and not b.allow()
    assert b.rejected == 2


def test_half_open_after_timeout_then_closes_on_success() -> None:
    b, clock, seen = make(failure_threshold=1, reset_timeout_s=5)
    b.record_failure()
    clock.now += 4.9
    assert not b.allow()
    assert b.retry_after() == pytest.approx(0.1)
    clock.now += 0.1
    assert b.allow()  # the one probe
    assert b.state is H
    assert not b.allow()  # probe slot taken
    b.record_success()
    assert b.state is C and b.allow()
    assert [(t.source, t.target) for t in seen] == [(C, OPEN), (OPEN, H), (H, C)]


def test_failed_probe_reopens_with_a_fresh_timeout() -> None:
    b, clock, _ = make(failure_threshold=2, reset_timeout_s=5, half_open_max_calls=2)
    b.record_failure()
    b.record_failure()
    clock.now += 5
    assert b.allow() and b.allow() and not b.allow()
    b.record_failure()
    assert b.state is OPEN
    clock.now += 4
    assert not b.allow()
    clock.now += 1
    assert b.allow()
    assert [(t.source, t.target) for t in b.transitions] == [
        (C, OPEN),
        (OPEN, H),
        (H, OPEN),
        (OPEN, H),
    ]
    assert b.transitions[2].reason == "probe failed"


def test_late_results_while_open_change_nothing() -> None:
    b, _, _ = make(failure_threshold=1, reset_timeout_s=5)
    b.record_failure()
    b.record_failure()
    b.record_success()  # a call started before the circuit opened
    assert b.state is OPEN
    assert len(b.transitions) == 1


def test_every_transition_is_in_the_table() -> None:
    b, clock, _ = make(failure_threshold=1, reset_timeout_s=1)
    for i in range(20):
        if b.allow():
            (b.record_failure if i % 3 else b.record_success)()
        clock.now += 0.6
    assert b.transitions
    assert all((t.source, t.target) in TRANSITIONS for t in b.transitions)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
