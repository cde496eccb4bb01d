"""One fake clock for every test of a time-driven core: it moves only when the test says."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A callable clock (``clock() -> seconds``) that a test sets or advances by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        self.now += seconds
        return self.now
