"""How a replica pool's free workers share what waits: a cost model of one call, shares that
let busy replicas finish together, and a short hold for a fuller call.

A call to an encoder replica costs a fixed part plus a part per text. The fixed part is
large on CPU: each pass streams every weight of the encoder (all-MiniLM-L6-v2, one thread,
a 2-core Xeon: ~7 ms per call and ~5.7 ms per text, so a call of one text costs twice as
much per text as a call of eight). Greedy dispatch (a free replica takes all that waits, at
once) spent that badly; a trace of 32 closed-loop clients on two replicas showed:

- one replica taking all 31 waiting texts (200 ms of work) while the other, free again 10 ms
  later, ran one client's requests one text at a time (13 calls of 1 text in those 200 ms);
- a replica that had just answered its call taking the 1-4 texts that had arrived during
  it, a millisecond before the clients it had just answered sent theirs.

:class:`DispatchPolicy` answers the two questions a free worker has, from what it observed:

- **How much to take** (:meth:`DispatchPolicy.share`): the work is cut so that this replica
  and the others (busy ones once their current call is predicted to end) finish at about the
  same time; a replica joins only if that ends the work sooner despite its call's fixed cost.
  With every replica free this is the even split the pool made before.
- **Whether to wait** (:meth:`DispatchPolicy.hold_s`): while another replica is busy, the
  waiting work is too small for an efficient call, and texts have been arriving fast enough
  that more are expected within the bound, the worker waits (at most half a call's fixed
  cost, which is the most a merged call can save). At low load (every replica idle, or
  requests arriving one by one) nothing waits.

The cost model is an exponentially weighted least-squares line through (call cost, seconds)
of the pool's own calls, so it follows the machine and the model; until it has seen enough
calls of different sizes, shares are even and nothing waits, as before. Pure: no threads,
no clock (callers pass ``now``), so it is driven directly in unit tests.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

__all__ = ["CallCostModel", "DispatchPolicy"]


class CallCostModel:
    """Seconds per call as ``fixed_s + per_unit_s * cost``, fitted online.

    Each observation's weight decays by ``decay`` per later call, so the line follows drift
    (another process taking CPU, a model with other text lengths) within ~``1 / (1 - decay)``
    calls. The fit is usable once ``min_calls`` calls of sufficiently different costs were
    seen, and its slope is positive; otherwise :attr:`ready` is False.
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

    def efficiency(self, cost: float) -> float:
        """The share of a call of ``cost`` spent on its texts rather than the fixed part."""
        if not self.ready or cost <= 0:
            return 1.0
        work = self.per_unit_s * cost
        return work / (self.fixed_s + work)


class DispatchPolicy:
    """A replica pool's share and hold decisions (see the module docstring).

    Args:
        efficiency: the fraction of a call's time its texts should take before a worker
            stops waiting for more (0.8: calls of ~4x the fixed cost's worth of texts).
        max_hold_s: the longest a worker may wait for a fuller call; ``None`` lets the
            model decide (half the fitted fixed cost), 0 never waits.
        window_s: how far back arrivals count when estimating the arrival rate; ``None``
            uses twice the hold bound.
    """

    def __init__(
        self,
        *,
        efficiency: float = 0.8,
        max_hold_s: float | None = None,
        window_s: float | None = None,
        cost: CallCostModel | None = None,
    ) -> None:
        if not 0.0 <= efficiency < 1.0:
            raise ValueError("efficiency must be in [0, 1)")
        if max_hold_s is not None and max_hold_s < 0:
            raise ValueError("max_hold_s must be >= 0")
        self.cost = cost or CallCostModel()
        self.efficiency = efficiency
        self.max_hold = max_hold_s
        self.window = window_s
        self._arrivals: collections.deque[tuple[float, float]] = collections.deque()
        self.holds = 0  # waits started (for stats)

    # -- observations ---------------------------------------------------------------------

    def arrived(self, cost: float, now: float) -> None:
        """Work of ``cost`` was queued at ``now``."""
        self._arrivals.append((now, cost))
        self._trim(now)

    def finished(self, cost: float, seconds: float) -> None:
        """A call of ``cost`` took ``seconds``."""
        self.cost.observe(cost, seconds)

    def _trim(self, now: float) -> None:
        horizon = now - self._window()
        arrivals = self._arrivals
        while arrivals and arrivals[0][0] < horizon:
            arrivals.popleft()

    # -- decisions ------------------------------------------------------------------------

    def hold_bound(self) -> float:
        """The longest a worker waits for a fuller call, in seconds."""
        if self.max_hold is not None:
            return self.max_hold
        return self.cost.fixed_s / 2 if self.cost.ready else 0.0

    def _window(self) -> float:
        return self.window if self.window is not None else max(2 * self.hold_bound(), 1e-3)

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

    def hold_s(self, pending_cost: float, now: float, *, others_busy: bool) -> float:
        """How long to wait before taking ``pending_cost`` of work (0: take it now).

        Waits only while another replica is busy, the call would be less efficient than
        ``efficiency``, and the recent arrival rate predicts more work within the bound.
        """
        bound = self.hold_bound()
        if not others_busy or bound <= 0 or not self.cost.ready:
            return 0.0
        if self.cost.efficiency(pending_cost) >= self.efficiency:
            return 0.0
        self._trim(now)
        window = self._window()
        if not self._arrivals:
            return 0.0
        rate = sum(c for _, c in self._arrivals) / window  # cost per second
        mean_cost = sum(c for _, c in self._arrivals) / len(self._arrivals)
        if rate * bound < mean_cost:  # not even one more request expected in time
            return 0.0
        return bound
