"""Multi-process mini-batch training: synchronous DDP and asynchronous Hogwild.

``sync``: N processes, each trains on its shard of the training nodes; DDP all-reduces the
gradients over gloo (127.0.0.1) on every step, so all replicas stay identical.
``async``: N processes update one set of shared-memory parameters without locks (Hogwild,
Recht et al. 2011), each sampling its own mini-batches and keeping its own AdamW state.

Worker 0 evaluates after each of its epochs, reports to the parent over a queue, copies the
best weights into a shared-memory model and decides early stopping. Every worker uses one
torch thread. Throughput is the sum of each worker's seed nodes per second of its own
training steps (evaluation excluded), the same measure the single-process trainer reports.
"""

from __future__ import annotations

import copy
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from open_autoglm.errors import TaskFailedError
from open_autoglm.ml.graph.data import GraphTensors
from open_autoglm.ml.graph.training import (
    EarlyStopping,
    EpochCallback,
    TrainConfig,
    TrainMode,
    TrainResult,
    evaluate,
    iter_batches,
    make_optimizer,
    make_sampler,
    train_step,
)

__all__ = ["free_port", "train_parallel"]

_POLL_SECONDS = 0.2


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _copy_into(dst: nn.Module, src: nn.Module) -> None:
    with torch.no_grad():
        for d, s in zip(dst.state_dict().values(), src.state_dict().values(), strict=True):
            d.copy_(s)


def _shard(train_idx: Tensor, rank: int, world: int, equal: bool) -> Tensor:
    shard = train_idx[rank::world]
    if equal:  # DDP needs the same number of steps on every rank, or it deadlocks
        shard = shard[: train_idx.numel() // world]
    return shard


def _worker(
    rank: int,
    mode: str,
    model: nn.Module,
    best: nn.Module,
    data: GraphTensors,
    cfg: TrainConfig,
    stop: Tensor,
    port: int,
    out: Any,
) -> None:
    torch.set_num_threads(1)
    try:
        _run_worker(rank, mode, model, best, data, cfg, stop, port, out)
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
    best: nn.Module,
    data: GraphTensors,
    cfg: TrainConfig,
    stop: Tensor,
    port: int,
    out: Any,
) -> None:
    world = cfg.workers
    sync = mode == TrainMode.SYNC
    torch.manual_seed(cfg.seed * 1000 + rank)  # dropout differs per worker
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    trainee: nn.Module = model
    if sync:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        trainee = DistributedDataParallel(model)
    sampler = make_sampler(data, cfg.fanout)
    opt = make_optimizer(trainee, cfg)
    shard = _shard(data.train_idx, rank, world, equal=sync)
    stopper = EarlyStopping(cfg.patience)
    seen, busy = 0, 0.0
    flag = torch.zeros(1, dtype=torch.int32)
    for epoch in range(cfg.epochs):
        losses: list[float] = []
        t0 = time.perf_counter()
        for batch in iter_batches(
            data, shard, sampler=sampler, batch_size=cfg.batch_size, generator=gen
        ):
            if not sync and int(stop[0]):
                break
            losses.append(train_step(trainee, opt, batch))
            seen += int(batch[2].numel())
        busy += time.perf_counter() - t0
        if rank == 0:
            metrics = {
                "epoch": float(epoch),
                "loss": sum(losses) / max(len(losses), 1),
                **evaluate(model, data),
            }
            if stopper.update(epoch, metrics["val_acc"], metrics["val_loss"]):
                _copy_into(best, model)
            out.put(("epoch", epoch, metrics))
            if stopper.should_stop or epoch == cfg.epochs - 1:
                stop[0] = 1
        if sync:
            flag[0] = int(stop[0])
            dist.broadcast(flag, src=0)  # doubles as the barrier after rank 0's evaluation
            if int(flag[0]):
                break
        elif int(stop[0]):
            break
    out.put(("done", rank, seen, busy, stopper.best_epoch))


def _context() -> Any:
    """A forkserver that has torch and PyG imported: workers start in well under a second.

    Fork from a server (not from the caller, which may hold threads and locks) and preload
    this module so every worker skips the multi-second torch/PyG import.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["open_autoglm.ml.graph.parallel", "open_autoglm.ml.graph.models"])
    return ctx


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
    model.share_memory()
    best = copy.deepcopy(model).share_memory()
    data.share_memory_()
    stop = torch.zeros(1, dtype=torch.int32).share_memory_()  # type: ignore[no-untyped-call]
    out = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, cfg.mode.value, model, best, data, cfg, stop, port, out),
            daemon=True,
        )
        for rank in range(cfg.workers)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    history: list[dict[str, float]] = []
    done: dict[int, tuple[int, float, int]] = {}
    try:
        while len(done) < cfg.workers:
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
            if msg[0] == "epoch":
                history.append(msg[2])
                if on_epoch is not None:
                    on_epoch(msg[1], msg[2])
            elif msg[0] == "done":
                done[msg[1]] = (msg[2], msg[3], msg[4])
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
    _copy_into(model, best)
    best_epoch = done[0][2]
    metrics = next((h for h in history if int(h["epoch"]) == best_epoch), {})
    rate = sum(n / s for n, s, _ in done.values() if s > 0)
    nodes = sum(n for n, _, _ in done.values())
    return TrainResult(
        history=history,
        best_epoch=best_epoch,
        metrics=metrics,
        state={k: v.clone() for k, v in model.state_dict().items()},
        train_nodes=nodes,
        train_seconds=nodes / rate if rate else 0.0,
        extra={"wall_seconds": wall, "workers": cfg.workers, "mode": cfg.mode.value},
    )
