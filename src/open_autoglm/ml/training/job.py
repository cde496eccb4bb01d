"""What a training task type tells the facility: the model, its data, its loss, its metrics.

A job is plain, picklable data plus methods: the facility builds it once in the handler and
ships it to every rank, so everything a rank needs (tensors, token ids, config) lives on it.
Batches are named by sample index, the same list on every rank, so the facility can split
one global batch across ranks and a 2-rank run takes the very steps a 1-process run takes.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = ["MonitorStopper", "Stopper", "TrainJob"]


@dataclasses.dataclass
class MonitorStopper:
    """Early stopping on one metric: the checkpoint moves when it improves; ``patience``
    epochs without improvement stop training (0: never stop early)."""

    monitor: str
    mode: Literal["min", "max"] = "min"
    patience: int = 0
    min_delta: float = 0.0  # an improvement smaller than this does not count
    best_epoch: int = -1
    best: float | None = None
    bad_epochs: int = 0

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record one epoch's metrics; True when its weights become the best."""
        value = float(metrics[self.monitor])
        better = (
            self.best is None
            or (self.mode == "min" and value < self.best - self.min_delta)
            or (self.mode == "max" and value > self.best + self.min_delta)
        )
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


# Anything with MonitorStopper's update/should_stop/best_epoch, as a dataclass (checkpointed
# with dataclasses.asdict and rebuilt with its constructor).
Stopper = Any


class TrainJob(abc.ABC):
    """A model recipe: subclass it per task type (text classifier, graph, temporal, fusion)."""

    # tells apart jobs one task runs one after another (their checkpoints, their progress)
    name: str = ""
    seed: int = 0
    epochs: int = 1
    patience: int = 0
    monitor: str = "val_loss"
    monitor_mode: Literal["min", "max"] = "min"
    min_delta: float = 0.0
    # imported once by the process ranks fork from, so each rank starts without the import
    preload: tuple[str, ...] = ()

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh model; called after ``torch.manual_seed(seed)`` so every rank builds the same."""

    @abc.abstractmethod
    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer over ``model.parameters()`` (after wrapping: FSDP's are sharded)."""

    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        """An LR scheduler stepped once per optimizer step, or None."""
        return None

    @abc.abstractmethod
    def global_batches(self, epoch: int) -> list[list[int]]:
        """Sample indices of each global batch of ``epoch``; deterministic in (seed, epoch)."""

    @abc.abstractmethod
    def collate(self, indices: list[int], generator: torch.Generator) -> Any:
        """This rank's share of a global batch as model input (``generator``: for sampling)."""

    @abc.abstractmethod
    def sample_losses(self, model: nn.Module, batch: Any) -> Tensor:
        """Per-sample losses, shape (n,): the facility weighs them by the global batch size."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics of an unwrapped model with this epoch's weights (includes ``monitor``)."""

    def shard_units(self, model: nn.Module) -> list[nn.Module]:
        """Submodules FSDP shards as units of their own (e.g. transformer layers); root last."""
        return []

    def make_stopper(self) -> Stopper:
        return MonitorStopper(
            self.monitor, self.monitor_mode, self.patience, min_delta=self.min_delta
        )
