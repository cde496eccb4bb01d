"""Small training jobs for the training facility's tests: a dropout-free MLP on fixed data.

Module-level classes, so the facility's rank processes can unpickle them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from open_autoglm.ml.training.job import TrainJob


class BlobsJob(TrainJob):
    """Four Gaussian blobs in 8 dimensions, a 2-layer MLP, AdamW: 50 steps in well under a second."""

    def __init__(
        self, *, n: int = 400, batch_size: int = 32, epochs: int = 4, seed: int = 0, **kw: Any
    ) -> None:
        gen = torch.Generator().manual_seed(1234)
        centers = torch.randn(4, 8, generator=gen) * 2.0
        y = torch.randint(0, 4, (n,), generator=gen)
        self.x = centers[y] + torch.randn(n, 8, generator=gen)  # (n, 8)
        self.y = y
        self.val = torch.arange(n - 80, n)
        self.train_n = n - 80
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed
        self.patience = kw.get("patience", 0)
        self.monitor = kw.get("monitor", "val_loss")
        self.monitor_mode = kw.get("monitor_mode", "min")

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
        )

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=1e-2)

    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / (total_steps + 1))

    def global_batches(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        perm = torch.randperm(self.train_n, generator=gen).tolist()
        return [perm[i : i + self.batch_size] for i in range(0, self.train_n, self.batch_size)]

    def collate(self, indices: list[int], generator: torch.Generator) -> Any:
        idx = torch.tensor(indices)
        return self.x[idx], self.y[idx]

    def sample_losses(self, model: nn.Module, batch: Any) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y, reduction="none")

    def shard_units(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in model if isinstance(m, nn.Linear)]

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        logits = model(self.x[self.val])
        y = self.y[self.val]
        return {
            "val_loss": float(F.cross_entropy(logits.float(), y)),
            "val_acc": float((logits.argmax(1) == y).float().mean()),
        }


def supervise_long_run(conn: Any) -> None:
    """Run a 2-rank DDP job that outlasts any test, sending its ranks' pids over ``conn``;
    the test kills this process and watches the ranks."""
    import re

    from open_autoglm.ml.training.fit import fit
    from open_autoglm.ml.training.spec import DistributedParams

    pids: list[int] = []

    def log(message: str) -> None:
        if m := re.match(r"rank \d started \(pid (\d+)", message):
            pids.append(int(m.group(1)))
            if len(pids) == 2:
                conn.send(pids)

    fit(BlobsJob(epochs=100_000), DistributedParams(strategy="ddp", world_size=2), log=log)


def supervise_long_hogwild(conn: Any) -> None:
    """Run 2 Hogwild graph workers that outlast any test, sending their pids over ``conn``."""
    import multiprocessing

    from helpers.graphs import community_graph
    from open_autoglm.ml.graph.data import GraphTensors
    from open_autoglm.ml.graph.models import ModelConfig, ModelKind, build_model
    from open_autoglm.ml.graph.parallel import train_parallel
    from open_autoglm.ml.graph.training import TrainConfig, TrainMode
    from open_autoglm.spec.graph import parse_graph

    data = GraphTensors.from_graph(parse_graph(community_graph()))
    model = build_model(ModelConfig(ModelKind.SAGE, int(data.x.shape[1]), 3, hidden=8))
    cfg = TrainConfig(epochs=100_000, mode=TrainMode.ASYNC, batch_size=8, fanout=(3, 3), workers=2)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 0:
            conn.send(
                [p.pid for p in multiprocessing.active_children() if "forkserver" not in p.name]
            )

    train_parallel(model, data, cfg, on_epoch=on_epoch)


def kill_supervisor(target: Callable[[Any], None]) -> list[int]:
    """Start ``target`` (one of the ``supervise_long_*`` above) in its own process, SIGKILL it
    once its workers run, and return the workers' pids: nothing of the supervisor's cleanup
    runs, so only the workers' own watch can end them."""
    import multiprocessing
    import os
    import signal

    import psutil

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    supervisor = ctx.Process(target=target, args=(child,))  # ranks are its children
    supervisor.start()
    pids: list[int] = parent.recv()
    assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids), pids
    os.kill(supervisor.pid, signal.SIGKILL)  # type: ignore[arg-type]
    supervisor.join()
    return pids
