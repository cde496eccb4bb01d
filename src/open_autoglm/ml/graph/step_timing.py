"""Where a parallel training run's wall-clock time goes, per worker.

Each worker keeps a :class:`WorkerClock` (totals plus, in sync mode, when each all-reduce
was entered and when it completed) and sends it to the parent; :func:`breakdown` turns the
clocks of all workers into seconds per phase. Pure: no processes, no clock of its own.

The k-th all-reduce of every rank is the same collective, so it completes only once the
last rank has entered it: time from a rank's own arrival to the last arrival is straggler
wait, time from the last arrival to completion is the transfer itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PHASES", "WorkerClock", "breakdown"]

# the phases breakdown() reports, in the order they happen in a step
PHASES = (
    "startup",  # process start, import, process-group setup, optimizer and sampler
    "sample",  # neighbour sampling and feature gathering
    "compute",  # forward, backward and optimizer step
    "allreduce",  # gradient all-reduce transfer, after the last rank arrived (sync)
    "straggler_wait",  # waiting in the all-reduce for a slower rank (sync)
    "epoch_barrier",  # end-of-epoch stop-flag broadcast, waiting for the other ranks (sync)
    "snapshot",  # worker 0 copying the weights out for evaluation
    "other",  # loop overhead; the rest of the training span
)


@dataclass
class WorkerClock:
    """Seconds one worker spent per phase; timestamps are ``time.perf_counter()`` values."""

    rank: int
    seen: int = 0  # seed nodes of its optimizer steps
    sample: float = 0.0
    step: float = 0.0  # compute plus, in sync, the all-reduce and the wait inside it
    barrier: float = 0.0
    snapshot: float = 0.0
    first: float = 0.0  # start of its first batch
    cpu: float = 0.0  # CPU seconds of its training thread over the span
    last: float = 0.0  # when it left its training loop
    arrive: list[float] = field(default_factory=list)  # entered the k-th all-reduce
    done: list[float] = field(default_factory=list)  # k-th all-reduce completed

    @property
    def busy(self) -> float:
        """Time in its training steps and their sampling (the per-worker busy time)."""
        return self.sample + self.step


def breakdown(clocks: list[WorkerClock], started: float) -> list[dict[str, float]]:
    """Seconds per phase (:data:`PHASES`), the training ``span`` and ``preempted`` per worker.

    ``started`` is when the parent began starting the workers.
    """
    waits = {c.rank: 0.0 for c in clocks}
    transfers = {c.rank: 0.0 for c in clocks}
    steps = min((len(c.done) for c in clocks), default=0)
    for k in range(steps):
        latest = max(c.arrive[k] for c in clocks)
        for c in clocks:
            waits[c.rank] += latest - c.arrive[k]
            transfers[c.rank] += max(c.done[k] - latest, 0.0)
    rows = []
    for c in clocks:
        span = c.last - c.first
        compute = c.step - waits[c.rank] - transfers[c.rank]
        accounted = c.sample + c.step + c.barrier + c.snapshot
        rows.append(
            {
                "rank": float(c.rank),
                "startup": c.first - started,
                "sample": c.sample,
                "compute": compute,
                "allreduce": transfers[c.rank],
                "straggler_wait": waits[c.rank],
                "epoch_barrier": c.barrier,
                "snapshot": c.snapshot,
                "other": max(span - accounted, 0.0),
                "span": span,
                # runnable but not running: the span minus CPU and the waits in collectives
                # (which sleep). Near 0 on a quiet machine; other processes' load shows here.
                "preempted": max(span - c.cpu - waits[c.rank] - transfers[c.rank] - c.barrier, 0.0),
            }
        )
    return rows
