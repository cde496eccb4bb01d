"""A circuit breaker as a pure state machine: events in, decisions out, the clock injected.

    closed --(failure_threshold consecutive failures)--> open
    open --(reset_timeout_s elapsed, next allow())-----> half-open
    half-open --(a probe succeeds)---------------------> closed
    half-open --(a probe fails)------------------------> open

While open, :meth:`CircuitBreaker.allow` says no without any I/O, so callers fail fast instead
of waiting on a dead dependency. Half-open lets ``half_open_max_calls`` probes through; the
rest are refused until a probe reports. The object does no I/O and starts no threads; a lock
makes it safe to share between request threads. The HTTP shell that uses it is
``executors/upstream.py``.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TRANSITIONS", "BreakerState", "CircuitBreaker", "Transition"]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


# The only legal (from, to) moves; anything else is a bug in this module.
TRANSITIONS: frozenset[tuple[BreakerState, BreakerState]] = frozenset(
    {
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
    }
)


@dataclass(frozen=True)
class Transition:
    source: BreakerState
    target: BreakerState
    at: float
    reason: str


class CircuitBreaker:
    """Consecutive-failure circuit breaker.

    Args:
        failure_threshold: consecutive failures (while closed) that open the circuit.
        reset_timeout_s: how long it stays open before letting a probe through.
        half_open_max_calls: probes allowed at once while half-open.
        clock: monotonic seconds; inject a fake one in tests.
        on_transition: called with each :class:`Transition` (outside the lock).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 10.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1 or reset_timeout_s < 0:
            raise ValueError("failure_threshold and half_open_max_calls must be >= 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive, while closed
        self._opened_at = 0.0
        self._probes = 0  # in flight, while half-open
        self.transitions: list[Transition] = []
        self.rejected = 0  # calls refused while open / half-open full

    # -- events ------------------------------------------------------------------------------

    def allow(self) -> bool:
        """May a call go through now? A True while half-open reserves a probe slot."""
        with self._lock:
            moved = self._expire_locked()
            if self._state is BreakerState.CLOSED:
                ok = True
            elif self._state is BreakerState.HALF_OPEN and self._probes < self.half_open_max_calls:
                self._probes += 1
                ok = True
            else:
                self.rejected += 1
                ok = False
        self._notify(moved)
        return ok

    def record_success(self) -> None:
        with self._lock:
            moved = []
            if self._state is BreakerState.HALF_OPEN:
                moved.append(self._move_locked(BreakerState.CLOSED, "probe succeeded"))
            self._failures = 0
        self._notify(moved)

    def record_failure(self) -> None:
        with self._lock:
            moved = []
            if self._state is BreakerState.HALF_OPEN:
                moved.append(self._move_locked(BreakerState.OPEN, "probe failed"))
            elif self._state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    moved.append(
                        self._move_locked(
                            BreakerState.OPEN, f"{self._failures} consecutive failures"
                        )
                    )
            # A late failure while already open changes nothing.
        self._notify(moved)

    # -- reading -----------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """Current state (an expired open circuit reads as half-open)."""
        with self._lock:
            moved = self._expire_locked()
            state = self._state
        self._notify(moved)
        return state

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())

    # -- internals ---------------------------------------------------------------------------

    def _expire_locked(self) -> list[Transition]:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout_s
        ):
            return [self._move_locked(BreakerState.HALF_OPEN, "reset timeout elapsed")]
        return []

    def _move_locked(self, target: BreakerState, reason: str) -> Transition:
        if (self._state, target) not in TRANSITIONS:
            raise RuntimeError(f"illegal breaker transition {self._state} -> {target}")
        t = Transition(self._state, target, self._clock(), reason)
        self._state = target
        self._probes = 0
        self._failures = 0
        if target is BreakerState.OPEN:
            self._opened_at = t.at
        self.transitions.append(t)
        return t

    def _notify(self, moved: list[Transition]) -> None:
        if self._on_transition is not None:
            for t in moved:
                self._on_transition(t)
