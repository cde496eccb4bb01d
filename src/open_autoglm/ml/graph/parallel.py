"""Multi-process mini-batch training: synchronous DDP and asynchronous Hogwild.

``sync`` runs on the shared training facility (:mod:`open_autoglm.ml.training`): N DDP ranks
over gloo split every global mini-batch, so a sync run takes the steps a one-process
``sampled`` run takes, with its checkpoints and resume. ``async``: N processes update one set
of shared-memory parameters without locks (Hogwild, Recht et al. 2011), each sampling its own
mini-batches and keeping its own AdamW state; it stays here because no rank waits for another.

Async evaluation is off the training path: after each of its epochs worker 0 sends a copy of
the weights to the parent, which scores it, keeps the best one and decides early stopping;
workers read the stop flag before every step. Every worker uses one torch thread, and the
parent evaluates with one thread too.

Throughput is reported two ways: ``nodes_per_second`` sums each worker's seed nodes per
second of its own training steps (sampling included; evaluation excluded), the measure the
single-process trainer reports; ``extra["wall_nodes_per_s"]`` divides all seed nodes by the
training span (first step of any worker to last step of any worker), waits included.
``extra["breakdown"]`` says where each async worker's time went
(:mod:`open_autoglm.ml.graph.step_timing`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import queue
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

from open_autoglm.errors import TaskFailedError
from open_autoglm.ml.graph.data import GraphTensors
from open_autoglm.ml.graph.step_timing import WorkerClock, breakdown
from open_autoglm.ml.graph.training import (
    EarlyStopping,
    EpochCallback,
    Features,
    TrainConfig,
    TrainMode,
    TrainResult,
    evaluate,
    iter_batches,
    make_optimizer,
    make_sampler,
    model_features,
    train_step,
)

__all__ = ["train_parallel"]

# runner(job, dist) -> FitResult: how a sync job reaches the training facility
Runner = Callable[[Any, Any], Any]

_POLL_SECONDS = 0.2


def _shard(train_idx: Tensor, rank: int, world: int) -> Tensor:
    return train_idx[rank::world]


def _worker(
    rank: int,
    model: nn.Module,
    data: GraphTensors,
    features: Features,
    cfg: TrainConfig,
    stop: Tensor,
    out: Any,
    supervisor: int = 0,
) -> None:
    torch.set_num_threads(1)
    if supervisor:
        from open_autoglm.ml.training.ranks import die_with

        die_with(supervisor)  # a cancelled or killed task leaves no worker training on
    try:
        _run_worker(rank, model, data, features, cfg, stop, out)
    except BaseException:
        out.put(("error", rank, traceback.format_exc()))
        raise


def _run_worker(
    rank: int,
    model: nn.Module,
    data: GraphTensors,
    features: Features,
    cfg: TrainConfig,
    stop: Tensor,
    out: Any,
) -> None:
    world = cfg.workers
    torch.manual_seed(cfg.seed * 1000 + rank)  # dropout differs per worker
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    clock = WorkerClock(rank)
    trainee: nn.Module = model  # the shared parameters themselves
    sampler = make_sampler(data, cfg.fanout)
    opt = make_optimizer(trainee, cfg)
    shard = _shard(data.train_idx, rank, world)
    clock.first = time.perf_counter()
    cpu0 = time.thread_time()
    for epoch in range(cfg.epochs):
        losses: list[float] = []
        batches = iter_batches(
            data,
            shard,
            sampler=sampler,
            batch_size=cfg.batch_size,
            generator=gen,
            features=features,
        )
        t0 = time.perf_counter()
        for batch in batches:
            if int(stop[0]):
                break
            t1 = time.perf_counter()
            losses.append(train_step(trainee, opt, batch))
            t2 = time.perf_counter()
            clock.sample += t1 - t0
            clock.step += t2 - t1
            clock.seen += int(batch[2].numel())
            t0 = t2
        clock.last = time.perf_counter()
        if int(stop[0]):
            break  # the parent has stopped scoring; a partial epoch is not worth a snapshot
        if rank == 0:
            state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
            out.put(("snapshot", epoch, sum(losses) / max(len(losses), 1), state))
            clock.snapshot += time.perf_counter() - clock.last
    clock.last = time.perf_counter()
    clock.cpu = time.thread_time() - cpu0
    out.put(("done", rank, clock))


def _context() -> Any:
    """A forkserver that has torch and PyG imported: workers start in well under a second.

    Fork from a server (not from the caller, which may hold threads and locks) and preload
    this module so every worker skips the multi-second torch/PyG import.
    """
    ctx = mp.get_context("forkserver")
    # torch._dynamo: building any optimizer imports it (seconds); once here, not per worker
    ctx.set_forkserver_preload(
        ["torch._dynamo", "open_autoglm.ml.graph.parallel", "open_autoglm.ml.graph.models"]
    )
    return ctx


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Evaluate with one thread: the workers already have a core each."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_parallel(
    model: nn.Module,
    data: GraphTensors,
    cfg: TrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
    check_cancelled: Callable[[], None] | None = None,
    runner: Runner | None = None,
    precision: str = "fp32",
) -> TrainResult:
    """Train ``model`` with ``cfg.workers`` processes in ``cfg.mode`` (sync or async).

    The model is trained in place (its best epoch's weights are loaded at the end).
    ``runner(job, dist)`` runs a sync job on the facility (default: :func:`fit` here; a
    task passes :func:`~open_autoglm.ml.training.task.run_training` for checkpoints).
    """
    if cfg.mode not in (TrainMode.SYNC, TrainMode.ASYNC):
        raise ValueError(f"train_parallel runs sync or async, not {cfg.mode}")
    if cfg.mode is TrainMode.SYNC:
        from open_autoglm.ml.graph.job import train_on_facility
        from open_autoglm.ml.training.spec import DistributedParams, Precision, Strategy

        dist = DistributedParams(
            strategy=Strategy.DDP, world_size=cfg.workers, precision=Precision(precision)
        )
        return train_on_facility(
            model, data, cfg, dist, runner, on_epoch=on_epoch, check_cancelled=check_cancelled
        )
    ctx = _context()
    torch.manual_seed(cfg.seed)
    for param in model.parameters():
        param.grad = None  # a shared grad buffer would let workers clobber each other's gradients
    evaluator = copy.deepcopy(model)
    model.share_memory()
    features = model_features(model, data)
    data.share_memory_()
    features.share_memory_()
    stop = torch.zeros(1, dtype=torch.int32).share_memory_()  # type: ignore[no-untyped-call]
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, model, data, features, cfg, stop, out, os.getpid()),
            daemon=True,
        )
        for rank in range(cfg.workers)
    ]
    stopper = EarlyStopping(cfg.patience)
    history: list[dict[str, float]] = []
    best: dict[str, Tensor] = {k: v.clone() for k, v in model.state_dict().items()}
    clocks: dict[int, WorkerClock] = {}
    started = time.perf_counter()
    for p in procs:
        p.start()
    try:
        with _one_thread():
            while len(clocks) < cfg.workers:
                if check_cancelled is not None:
                    check_cancelled()
                try:
                    msg = out.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise TaskFailedError(
                            f"async worker exited with code {dead[0].exitcode}"
                        ) from None
                    continue
                if msg[0] == "snapshot":
                    _, epoch, loss, arrays = msg
                    state = {k: torch.from_numpy(a) for k, a in arrays.items()}
                    evaluator.load_state_dict(state)
                    metrics = {
                        "epoch": float(epoch),
                        "loss": loss,
                        **evaluate(evaluator, data, features),
                    }
                    history.append(metrics)
                    if stopper.update(epoch, metrics["val_acc"], metrics["val_loss"]):
                        best = state
                    if stopper.should_stop:
                        stop[0] = 1
                    if on_epoch is not None:
                        on_epoch(epoch, metrics)
                elif msg[0] == "done":
                    clocks[msg[1]] = msg[2]
                else:
                    raise TaskFailedError(f"async worker {msg[1]} failed:\n{msg[2]}")
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    wall = time.perf_counter() - started
    model.load_state_dict(best)
    ranks = [clocks[r] for r in range(cfg.workers)]
    nodes = sum(c.seen for c in ranks)
    rate = sum(c.seen / c.busy for c in ranks if c.busy > 0)
    span = max(c.last for c in ranks) - min(c.first for c in ranks)
    metrics = next((h for h in history if int(h["epoch"]) == stopper.best_epoch), {})
    return TrainResult(
        history=history,
        best_epoch=stopper.best_epoch,
        metrics=metrics,
        state={k: v.clone() for k, v in model.state_dict().items()},
        train_nodes=nodes,
        train_seconds=nodes / rate if rate else 0.0,
        extra={
            "wall_seconds": wall,
            "train_span_seconds": span,
            "wall_nodes_per_s": nodes / span if span > 0 else 0.0,
            "workers": cfg.workers,
            "mode": cfg.mode.value,
            "breakdown": breakdown(ranks, started),
        },
    )
