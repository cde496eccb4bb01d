"""How a replica pool's free workers share what waits: a cost model of one call, and shares
that let the busy replicas and the free one finish together.

A call to an encoder replica costs a fixed part plus a part per text, and the fixed part is
large on CPU (small calls stream every weight for little work), so a call of one text costs
far more per text than a call of eight. Greedy dispatch (a free replica takes all that
waits, at once) spends that badly: one replica takes everything while the other, free again
a moment later, serves the clients left over one text at a time.

:meth:`DispatchPolicy.share` tells a free worker how much of the waiting work to take: the
work is cut so that this replica and the others (busy ones from when their current call is
predicted to end) finish at about the same time, and a replica joins only if that ends the
work sooner despite its call's fixed cost. All of it when the others are busy for long,
half when another replica is free too, more than half when another frees up soon.

The cost model is an exponentially weighted least-squares line through (call cost, seconds)
of the pool's own calls, so it follows the machine and the model. Until it has seen enough
calls of different sizes, busy replicas get no share and free ones split evenly.

Pure: no threads, no clock (callers pass times), so it is driven directly in unit tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["CallCostModel", "DispatchPolicy"]


class CallCostModel:
    """Seconds per call as ``fixed_s + per_unit_s * cost``, fitted online.

    Each observation's weight decays by ``decay`` per later call, so the line follows drift
    (another process taking CPU, a model with other text lengths) within ~``1 / (1 - decay)``
    calls. The fit is usable once ``min_calls`` calls of sufficiently different costs were
    seen and its slope is positive; otherwise :attr:`ready` is False.
    """

    def __init__(self, *, decay: float = 0.98, min_calls: int = 8) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        self.decay = decay
        self.min_calls = min_calls
        self.calls = 0
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self.fixed_s = 0.0
        self.per_unit_s = 0.0
        self.ready = False

    def observe(self, cost: float, seconds: float) -> None:
        """One finished call: its cost (in the pool's units) and its wall seconds."""
        if cost <= 0 or seconds <= 0:
            return
        d = self.decay
        self._w = self._w * d + 1.0
        self._x = self._x * d + cost
        self._y = self._y * d + seconds
        self._xx = self._xx * d + cost * cost
        self._xy = self._xy * d + cost * seconds
        self.calls += 1
        self._fit()

    def _fit(self) -> None:
        w, x, y = self._w, self._x, self._y
        var = w * self._xx - x * x  # w^2 times the weighted variance of the costs
        # Costs must differ by more than ~10% of their mean for a slope to mean anything.
        if self.calls < self.min_calls or var <= (0.1 * x) ** 2:
            self.ready = False
            return
        slope = (w * self._xy - x * y) / var
        fixed = (y - slope * x) / w
        if slope <= 0:
            self.ready = False
            return
        if fixed < 0:  # noise below the origin: a line through it
            slope, fixed = y / x, 0.0
        self.per_unit_s, self.fixed_s, self.ready = slope, fixed, True

    def predict(self, cost: float) -> float:
        """Predicted seconds for a call of ``cost`` (0.0 before the model is ready)."""
        return self.fixed_s + self.per_unit_s * cost if self.ready else 0.0


class DispatchPolicy:
    """A replica pool's share decisions (see the module docstring)."""

    def __init__(self, cost: CallCostModel | None = None) -> None:
        self.cost = cost or CallCostModel()

    def finished(self, cost: float, seconds: float) -> None:
        """A call of ``cost`` took ``seconds``."""
        self.cost.observe(cost, seconds)

    def predicted_end(self, start: float, cost: float) -> float:
        """When a call of ``cost`` started at ``start`` should end (never, while the cost
        model is not ready: a busy replica then gets no share)."""
        return start + self.cost.predict(cost) if self.cost.ready else math.inf

    def share(self, total: float, others_free_in: Sequence[float]) -> float:
        """This worker's cost share of ``total`` waiting work.

        ``others_free_in``: for every other live replica, the seconds until it is free
        (0 for one that is free now). Water-filling: replicas join in the order they free
        up while joining still ends the work sooner, each paying the fixed cost, and all
        that join end together. Before the cost model is ready, the free replicas split it
        evenly and busy ones get none.
        """
        if total <= 0:
            return 0.0
        if not self.cost.ready:
            free = 1 + sum(1 for r in others_free_in if r <= 0)
            return total / free
        fixed, per_unit = self.cost.fixed_s, self.cost.per_unit_s
        work = per_unit * total  # seconds of per-text work to spread
        starts = [0.0]  # when each joining replica can begin its fixed part
        end = fixed + work  # this replica alone
        for r in sorted(max(0.0, r) for r in others_free_in):
            if r + fixed >= end:
                break
            starts.append(r)
            end = (work + sum(s + fixed for s in starts)) / len(starts)
        mine = (end - fixed) / per_unit
        return min(total, max(mine, 0.0))
