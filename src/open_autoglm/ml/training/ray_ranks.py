"""Ranks as Ray actors: under the Ray executor a distributed job's ranks are Ray workers that
reserve their own CPUs, on one node or several.

The supervisor (the task's own Ray worker, which then reserves no CPU: see
:func:`~open_autoglm.ml.training.spec.ranks_reserve_their_own`) creates one actor per rank, asks rank 0 for its node's address
and a free port, starts every rank's loop, and reads their messages from a Ray queue. A rank
whose actor dies fails the task retryably, as a killed local rank does. Checkpoint shards are
written to the scratch directory, so ranks on other nodes need it on a shared mount (as the
artifact directory already is on a multi-node cluster).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from open_autoglm.errors import TaskFailedError
from open_autoglm.ml.training.job import TrainJob
from open_autoglm.ml.training.ranks import RankPlan, run_rank

__all__ = ["in_ray_worker", "supervise_on_ray"]

_POLL_SECONDS = 0.2


def in_ray_worker() -> bool:
    """True inside a Ray worker process (not the driver): ranks should be Ray actors too."""
    import sys

    if "ray" not in sys.modules:
        return False
    import ray

    if not ray.is_initialized():
        return False
    return bool(ray.get_runtime_context().worker.mode == ray.WORKER_MODE)


class _Rank:
    """One rank's actor: says where it is, then runs the shared loop."""

    def address(self) -> tuple[str, int]:
        import ray

        from open_autoglm.ports import free_port

        return ray.util.get_node_ip_address(), free_port("")  # type: ignore[no-untyped-call]

    def pid(self) -> int:
        import os

        return os.getpid()

    def run(self, job: TrainJob, plan: RankPlan, out: Any) -> None:
        run_rank(job, plan, out.put)


def supervise_on_ray(
    job: TrainJob,
    plans: list[RankPlan],
    handle: Callable[[tuple[Any, ...]], None],
    finished: Callable[[], bool],
    check_cancelled: Callable[[], None] | None,
) -> None:
    """Run ``plans`` as Ray actors until ``finished()``; each message goes to ``handle``."""
    import ray
    from ray.util.queue import Queue

    cpus = float(plans[0].threads)
    # Ray's stubs type actor handles per class; the calls below are checked by the tests
    actor: Any = ray.remote(num_cpus=cpus, max_restarts=0)(_Rank)
    out: Any = Queue(actor_options={"num_cpus": 0})
    ranks: list[Any] = [actor.remote() for _ in plans]
    try:
        host, port = ray.get(ranks[0].address.remote())
        runs = [
            r.run.remote(job, replace(plan, master_addr=host, port=port, launcher="ray actor"), out)
            for r, plan in zip(ranks, plans, strict=True)
        ]
        while not finished():
            if check_cancelled is not None:
                check_cancelled()
            try:
                msg = out.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                _raise_for_dead(ray, runs)
                continue
            if msg[0] == "error":
                _raise_for_dead(ray, runs, wait_s=2.0)
            handle(msg)
    finally:
        for r in ranks:
            ray.kill(r)
        ray.kill(out.actor)


def _raise_for_dead(ray: Any, runs: list[Any], wait_s: float = 0.0) -> None:
    """A rank whose actor died (killed, out of memory): a retryable failure."""
    done, _ = ray.wait(runs, num_returns=len(runs), timeout=wait_s)
    for ref in done:
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            raise TaskFailedError(
                f"a training rank's Ray actor died: {exc}", retryable=True
            ) from None
        except ray.exceptions.RayTaskError:
            pass  # the rank's own error: it arrives as an "error" message with its traceback
