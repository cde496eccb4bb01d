"""The ``distributed`` block every training task's params carry (torch-free: parsed at submit)."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DistributedParams", "Precision", "Strategy", "ranks_reserve_their_own"]

MAX_WORLD_SIZE = 16


class Strategy(enum.StrEnum):
    NONE = "none"  # this process only
    DDP = "ddp"  # a full replica per rank, gradients all-reduced
    FSDP = "fsdp"  # parameters, gradients and optimizer state sharded across ranks (FSDP2)


class Precision(enum.StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"  # autocast: matmuls in bfloat16, weights and optimizer state stay fp32


class DistributedParams(BaseModel):
    """How a training job runs: strategy, number of ranks, numeric precision."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Strategy.NONE
    world_size: int = Field(default=1, ge=1, le=MAX_WORLD_SIZE, description="ranks (processes)")
    precision: Precision = Precision.FP32

    @model_validator(mode="after")
    def _one_rank_without_strategy(self) -> DistributedParams:
        if self.strategy is Strategy.NONE and self.world_size != 1:
            raise ValueError(
                f"world_size {self.world_size} needs strategy ddp or fsdp (strategy none is one process)"
            )
        return self

    @property
    def cpus(self) -> float:
        """CPUs to reserve: one per rank (each rank runs one torch thread per CPU it gets)."""
        return float(self.world_size)


def ranks_reserve_their_own(params: Any) -> bool:
    """Whether a task's ranks become Ray actors with their own CPUs under the Ray executor (so
    the task's own Ray worker, which only supervises them, needs none)."""
    dist = getattr(params, "facility", None) or getattr(params, "distributed", None)
    return (
        isinstance(dist, DistributedParams)
        and dist.strategy is not Strategy.NONE
        and dist.world_size > 1
    )
