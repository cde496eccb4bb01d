"""Multi-process mini-batch training: synchronous DDP and asynchronous Hogwild.

``sync``: N processes, each with its own replica, trains on its shard of the training nodes;
DDP all-reduces the gradients over gloo (127.0.0.1) on every step, so the replicas stay
identical. ``async``: N processes update one set of shared-memory parameters without locks
(Hogwild, Recht et al. 2011), each sampling its own mini-batches and keeping its own AdamW
state.

Evaluation is off the training path in both modes: after each of its epochs worker 0 sends
a copy of the weights to the parent, which scores it, keeps the best one and decides early
stopping; workers read the stop flag at the end of an epoch (sync: rank 0 broadcasts it, so
all ranks stop at the same step) or before every step (async). Every worker uses one torch
thread, and the parent evaluates with one thread too.

Throughput is reported two ways: ``nodes_per_second`` sums each worker's seed nodes per
second of its own training steps (sampling included; evaluation and the end-of-epoch
barrier excluded), the measure the single-process trainer reports; ``extra["wall_nodes_per_s"]``
divides all seed nodes by the training span (first step of any worker to last step of any
worker), waits included. ``extra["breakdown"]`` says where each worker's time went
(:mod:`open_autoglm.ml.graph.step_timing`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch._C._distributed_c10d import GradBucket
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

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

__all__ = ["free_port", "train_parallel"]

_POLL_SECONDS = 0.2


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shard(train_idx: Tensor, rank: int, world: int, equal: bool) -> Tensor:
    shard = train_idx[rank::world]
    if equal:  # DDP needs the same number of steps on every rank, or it deadlocks
        shard = shard[: train_idx.numel() // world]
    return shard


def _timed_allreduce(clock: WorkerClock) -> Callable[[Any, GradBucket], Any]:
    """DDP's default all-reduce hook, stamping when this rank entered it and when it finished."""

    def hook(state: Any, bucket: GradBucket) -> torch.futures.Future[Tensor]:
        clock.arrive.append(time.perf_counter())

        def stamp(fut: torch.futures.Future[Tensor]) -> Tensor:
            clock.done.append(time.perf_counter())
            return fut.value()

        return allreduce_hook(state, bucket).then(stamp)

    # DDP checks the annotations as objects; this module's are strings (future annotations)
    hook.__annotations__ = {
        "state": Any,
        "bucket": GradBucket,
        "return": torch.futures.Future[Tensor],
    }
    return hook


def _worker(
    rank: int,
    mode: str,
    model: nn.Module,
    data: GraphTensors,
    features: Features,
    cfg: TrainConfig,
    stop: Tensor,
    port: int,
    out: Any,
) -> None:
    torch.set_num_threads(1)
    try:
        _run_worker(rank, mode, model, data, features, cfg, stop, port, out)
    except BaseException:
        out.put(("error", rank, traceback.format_exc()))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _run_worker(
    rank: int,
    mode: str,
    model: nn.Module,
    data: GraphTensors,
    features: Features,
    cfg: TrainConfig,
    stop: Tensor,
    port: int,
    out: Any,
) -> None:
    world = cfg.workers
    sync = mode == TrainMode.SYNC
    torch.manual_seed(cfg.seed * 1000 + rank)  # dropout differs per worker
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    clock = WorkerClock(rank)
    trainee: nn.Module = model  # async: the shared parameters themselves
    if sync:
        model = copy.deepcopy(model)  # a private replica: DDP keeps them equal
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        trainee = DistributedDataParallel(model)
        trainee.register_comm_hook(None, _timed_allreduce(clock))
    sampler = make_sampler(data, cfg.fanout)
    opt = make_optimizer(trainee, cfg)
    shard = _shard(data.train_idx, rank, world, equal=sync)
    flag = torch.zeros(1, dtype=torch.int32)
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
            if not sync and int(stop[0]):
                break
            t1 = time.perf_counter()
            losses.append(train_step(trainee, opt, batch))
            t2 = time.perf_counter()
            clock.sample += t1 - t0
            clock.step += t2 - t1
            clock.seen += int(batch[2].numel())
            t0 = t2
        clock.last = time.perf_counter()
        if not sync and int(stop[0]):
            break  # the parent has stopped scoring; a partial epoch is not worth a snapshot
        if rank == 0:
            state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
            out.put(("snapshot", epoch, sum(losses) / max(len(losses), 1), state))
            clock.snapshot += time.perf_counter() - clock.last
        if sync:
            t0 = time.perf_counter()
            flag[0] = int(stop[0])
            dist.broadcast(flag, src=0)  # every rank stops after the same epoch
            clock.barrier += time.perf_counter() - t0
            if int(flag[0]):
                break
    clock.last = time.perf_counter()
    clock.cpu = time.thread_time() - cpu0
    out.put(("done", rank, clock))


def _context() -> Any:
    """A forkserver that has torch and PyG imported: workers start in well under a second.

    Fork from a server (not from the caller, which may hold threads and locks) and preload
    this module so every worker skips the multi-second torch/PyG import.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["open_autoglm.ml.graph.parallel", "open_autoglm.ml.graph.models"])
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
) -> TrainResult:
    """Train ``model`` with ``cfg.workers`` processes in ``cfg.mode`` (sync or async).

    The model is trained in place (its best epoch's weights are loaded at the end).
    """
    if cfg.mode not in (TrainMode.SYNC, TrainMode.ASYNC):
        raise ValueError(f"train_parallel runs sync or async, not {cfg.mode}")
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
    port = free_port()
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, cfg.mode.value, model, data, features, cfg, stop, port, out),
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
                            f"{cfg.mode} worker exited with code {dead[0].exitcode}"
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
                    raise TaskFailedError(f"{cfg.mode} worker {msg[1]} failed:\n{msg[2]}")
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
