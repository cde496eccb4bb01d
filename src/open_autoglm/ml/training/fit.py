"""Run a :class:`TrainJob` under a :class:`DistributedParams`: one process, or N ranks.

The supervisor (this module) starts the ranks, relays what they report (steps, epochs,
checkpoint shards), and turns a rank that dies into a retryable failure, so the scheduler
retries the task and :mod:`open_autoglm.ml.training.task` resumes it from its last checkpoint.
Ranks come from a forkserver that has torch and this package imported, so each starts in well
under a second.
"""

from __future__ import annotations

import os
import queue
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from open_autoglm.errors import TaskFailedError
from open_autoglm.ml.training.job import TrainJob
from open_autoglm.ml.training.ranks import RankPlan, Resume, run_rank
from open_autoglm.ml.training.spec import DistributedParams, Strategy
from open_autoglm.ports import free_port

__all__ = ["FitResult", "ShardSink", "StepEvent", "fit"]

_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class StepEvent:
    epoch: int
    step: int
    steps_per_epoch: int
    loss: float  # the global batch's mean loss
    samples: int  # in this global batch
    seconds: float  # this step's time on rank 0


# shard_sink(epoch, {rank: (tensors_path, meta_path)}) once every rank wrote its shard
ShardSink = Callable[[int, dict[int, tuple[str, str]]], None]


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    metrics: dict[str, float]  # the best epoch's
    state: dict[str, Tensor]  # the best epoch's full weights
    samples: int = 0  # trained, all ranks (a global batch counts once)
    train_seconds: float = 0.0  # rank 0's time inside training steps
    peak_rss_bytes: int = 0  # summed over ranks (they run at once)
    wall_seconds: float = 0.0
    resumed_from_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0


class _Collector:
    """Folds rank messages into a result and forwards the live ones."""

    def __init__(
        self,
        world: int,
        on_step: Callable[[StepEvent], None] | None,
        on_epoch: Callable[[int, dict[str, float]], None] | None,
        shard_sink: ShardSink | None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.world = world
        self.log = log
        self.on_step, self.on_epoch, self.shard_sink = on_step, on_epoch, shard_sink
        self.shards: dict[int, dict[int, tuple[str, str]]] = {}
        self.result: tuple[list[dict[str, float]], int, dict[str, Tensor]] | None = None
        self.done: dict[int, tuple[int, float, int]] = {}

    def __call__(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "started":
            if self.log is not None and self.world > 1:
                self.log(f"rank {msg[1]} started (pid {msg[2]}, {msg[3]})")
        elif kind == "step":
            if self.on_step is not None:
                self.on_step(StepEvent(*msg[1:]))
        elif kind == "epoch":
            if self.on_epoch is not None:
                self.on_epoch(msg[1], msg[2])
        elif kind == "shard":
            _, epoch, rank, tensors, meta = msg
            got = self.shards.setdefault(epoch, {})
            got[rank] = (tensors, meta)
            if len(got) == self.world:
                del self.shards[epoch]
                if self.shard_sink is not None:
                    self.shard_sink(epoch, got)
        elif kind == "result":
            self.result = (msg[1], msg[2], {k: torch.from_numpy(a) for k, a in msg[3].items()})
        elif kind == "done":
            self.done[msg[1]] = (msg[2], msg[3], msg[4])
        elif kind == "error":
            raise TaskFailedError(f"training rank {msg[1]} failed:\n{msg[2]}")

    def finish(self, wall: float, resumed: int | None) -> FitResult:
        if self.result is None or len(self.done) < self.world:
            raise TaskFailedError("training ended without a result from every rank", retryable=True)
        history, best_epoch, state = self.result
        samples, busy, _ = self.done[0]
        metrics = next((h for h in history if int(h["epoch"]) == best_epoch), {})
        return FitResult(
            history=history,
            best_epoch=best_epoch,
            metrics=metrics,
            state=state,
            samples=samples,
            train_seconds=busy,
            peak_rss_bytes=sum(d[2] for d in self.done.values()),
            wall_seconds=wall,
            resumed_from_epoch=resumed,
        )


def fit(
    job: TrainJob,
    dist: DistributedParams,
    *,
    threads: int = 1,
    on_step: Callable[[StepEvent], None] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    log: Callable[[str], None] | None = None,
    checkpoint_dir: str | None = None,
    shard_sink: ShardSink | None = None,
    resume: dict[int, Resume] | None = None,
    resumed_from_epoch: int | None = None,
) -> FitResult:
    """Train ``job``; ``threads`` is this task's CPU allotment, split evenly across ranks.

    ``checkpoint_dir`` (with ``shard_sink``) turns on a checkpoint per epoch; ``resume`` maps
    each rank to the shard it starts from.
    """
    world = dist.world_size
    collector = _Collector(world, on_step, on_epoch, shard_sink, log)
    started = time.perf_counter()
    per_rank = max(1, threads // world)
    if dist.strategy is Strategy.NONE:
        plan = RankPlan(0, 1, dist, per_rank, checkpoint_dir, (resume or {}).get(0))
        before = torch.get_num_threads()
        try:
            run_rank(job, plan, collector, check_cancelled)
        finally:
            torch.set_num_threads(before)
    else:
        from open_autoglm.ml.training.ray_ranks import in_ray_worker, supervise_on_ray

        if in_ray_worker():
            plans = [
                RankPlan(rank, world, dist, per_rank, checkpoint_dir, (resume or {}).get(rank))
                for rank in range(world)
            ]
            supervise_on_ray(
                job, plans, collector, lambda: len(collector.done) == world, check_cancelled
            )
        else:
            _supervise(
                job, dist, per_rank, collector, check_cancelled, checkpoint_dir, resume or {}
            )
    return collector.finish(time.perf_counter() - started, resumed_from_epoch)


def _context(job: TrainJob) -> Any:
    import torch.multiprocessing as mp

    ctx = mp.get_context("forkserver")
    # torch._dynamo: building any optimizer imports it (seconds); once here, not once per rank
    ctx.set_forkserver_preload(
        ["torch._dynamo", "torch.distributed.fsdp", "open_autoglm.ml.training.ranks", *job.preload]
    )
    return ctx


def _rank_main(job: TrainJob, plan: RankPlan, out: Any) -> None:
    try:
        run_rank(job, plan, out.put)
    except BaseException:
        out.put(("error", plan.rank, traceback.format_exc()))
        raise


def _supervise(
    job: TrainJob,
    dist: DistributedParams,
    threads: int,
    collector: _Collector,
    check_cancelled: Callable[[], None] | None,
    checkpoint_dir: str | None,
    resume: dict[int, Resume],
) -> None:
    ctx = _context(job)
    out = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(
                job,
                RankPlan(
                    rank,
                    dist.world_size,
                    dist,
                    threads,
                    checkpoint_dir,
                    resume.get(rank),
                    port,
                    supervisor=os.getpid(),
                ),
                out,
            ),
            daemon=True,
        )
        for rank in range(dist.world_size)
    ]
    for p in procs:
        p.start()
    try:
        while len(collector.done) < dist.world_size:
            if check_cancelled is not None:
                check_cancelled()
            try:
                msg = out.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                dead = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead:
                    rank, code = dead[0]
                    # a killed rank (OOM, SIGKILL): the task is retried and resumes from its
                    # last checkpoint
                    raise TaskFailedError(
                        f"training rank {rank} exited with code {code}", retryable=True
                    ) from None
                continue
            if msg[0] == "error":
                _raise_for_killed(procs)  # a peer's death shows first as a collective's error
            collector(msg)
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()


def _raise_for_killed(procs: list[Any], wait_s: float = 2.0) -> None:
    """Raise a retryable failure if a rank was killed by a signal (wait briefly to see it)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for rank, p in enumerate(procs):
            if p.exitcode is not None and p.exitcode < 0:
                raise TaskFailedError(
                    f"training rank {rank} was killed (signal {-p.exitcode})", retryable=True
                )
        time.sleep(0.05)


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """Where ranks write checkpoint shards before they become artifacts."""
    return tempfile.TemporaryDirectory(prefix="autoglm-ckpt-")
