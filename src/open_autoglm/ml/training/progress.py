"""Step reports as a person reads them: loss, samples/s, ETA; at most a few per second.

A pure object fed step events and the time (tests drive it with a simulated clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["StepReporter"]


@dataclass
class StepReporter:
    """Turns step events into progress reports; ``interval_s`` bounds how often one is made."""

    epochs: int
    start_epoch: int = 0
    interval_s: float = 0.5
    smoothing: float = 0.2  # weight of the newest step in the samples/s average
    _rate: float | None = None
    _last_report: float | None = None

    def step(
        self,
        now: float,
        *,
        epoch: int,
        step: int,
        steps_per_epoch: int,
        loss: float,
        samples: int,
        seconds: float,
    ) -> dict[str, Any] | None:
        """Fold one step in; the report to emit now, or None (too soon after the last)."""
        rate = samples / seconds if seconds > 0 else 0.0
        self._rate = (
            rate
            if self._rate is None
            else (1 - self.smoothing) * self._rate + self.smoothing * rate
        )
        last_of_epoch = step == steps_per_epoch - 1
        if (
            self._last_report is not None
            and now - self._last_report < self.interval_s
            and not last_of_epoch
        ):
            return None
        self._last_report = now
        done = (epoch - self.start_epoch) * steps_per_epoch + step + 1
        total = (self.epochs - self.start_epoch) * steps_per_epoch
        per_step = samples / self._rate if self._rate else 0.0
        return {
            "fraction": (epoch * steps_per_epoch + step + 1) / (self.epochs * steps_per_epoch),
            "message": f"epoch {epoch + 1}/{self.epochs} step {step + 1}/{steps_per_epoch}",
            "epoch": epoch,
            "step": step,
            "loss": round(loss, 6),
            "samples_per_s": round(self._rate, 3),
            "eta_s": round(max(0, total - done) * per_step, 1),
        }
