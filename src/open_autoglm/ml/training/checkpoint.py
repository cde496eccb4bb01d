"""Checkpoint shards: each rank writes its part of the model and optimizer, no pickle.

A shard is two files: ``.safetensors`` with the tensors (this rank's local slice of every
FSDP-sharded parameter and optimizer buffer, or the whole of them without FSDP) and ``.json``
with everything else (optimizer hyperparameters, the scheduler, the trainer's history and
early-stopping state). Loading needs the same strategy and world size; the manifest (written
by :mod:`open_autoglm.ml.training.task`) says which shards belong to one epoch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

__all__ = [
    "MANIFEST_FORMAT",
    "LoadedShard",
    "TrainerState",
    "load_shard",
    "local",
    "save_shard",
    "shard_paths",
]

MANIFEST_FORMAT = "open-autoglm/checkpoint/1"


@dataclasses.dataclass
class TrainerState:
    """What the loop itself must remember to go on exactly where it stopped."""

    epoch: int  # the last finished epoch
    history: list[dict[str, float]]
    stopper: dict[str, Any]
    stop: bool = False
    # rank 0: the best epoch's full weights (safetensors), written with this checkpoint only
    # when the best epoch changed since the last one (None: the last one's still hold)
    best_file: str | None = None


@dataclasses.dataclass(frozen=True)
class LoadedShard:
    """What a restored shard tells the loop besides the weights it loaded."""

    epoch: int  # the epoch the shard was written after
    trainer: TrainerState | None  # rank 0 only


def local(t: Tensor) -> Tensor:
    """A DTensor's local shard, or the tensor itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


def shard_paths(directory: str | Path, epoch: int, rank: int) -> tuple[Path, Path]:
    base = Path(directory) / f"epoch{epoch:04d}-rank{rank:02d}"
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def save_shard(
    directory: str | Path,
    *,
    epoch: int,
    rank: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    trainer: TrainerState | None,
) -> tuple[Path, Path]:
    """Write this rank's shard of epoch ``epoch``; returns (tensors, json) paths."""
    tensors: dict[str, Tensor] = {
        f"model/{k}": local(v).detach().contiguous().clone() for k, v in model.state_dict().items()
    }
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{pid}/{key}"] = local(value).detach().contiguous().clone()
    tensors["rng/torch"] = torch.get_rng_state()
    tensors["rng/generator"] = generator.get_state()
    meta = {
        "epoch": epoch,
        "rank": rank,
        "param_groups": opt["param_groups"],
        "optim_scalars": {
            str(pid): {k: v for k, v in s.items() if not isinstance(v, Tensor)}
            for pid, s in opt["state"].items()
        },
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "trainer": None if trainer is None else dataclasses.asdict(trainer),
    }
    tensors_path, meta_path = shard_paths(directory, epoch, rank)
    save_file(tensors, str(tensors_path))
    meta_path.write_text(json.dumps(meta, default=_jsonable))
    return tensors_path, meta_path


def load_shard(
    tensors_path: str | Path,
    meta_path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
) -> LoadedShard:
    """Restore a shard written by :func:`save_shard` into freshly built (and wrapped) objects."""
    tensors = load_file(str(tensors_path))
    meta = json.loads(Path(meta_path).read_text())
    with torch.no_grad():
        for key, value in model.state_dict().items():
            local(value).copy_(tensors[f"model/{key}"])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for pid, scalars in meta["optim_scalars"].items():
        state[int(pid)] = dict(scalars)
    for name, value in tensors.items():
        if not name.startswith("optim/"):
            continue
        _, pid, key = name.split("/", 2)
        state.setdefault(int(pid), {})[key] = _like(params[int(pid)], value, key)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng/torch"])
    generator.set_state(tensors["rng/generator"])
    trainer = meta.get("trainer")
    return LoadedShard(int(meta["epoch"]), None if trainer is None else TrainerState(**trainer))


def _like(param: Tensor, value: Tensor, key: str) -> Tensor:
    """An optimizer buffer placed like its parameter (FSDP: a DTensor over the same mesh)."""
    mesh = getattr(param, "device_mesh", None)
    if mesh is None or value.dim() == 0 or value.shape != local(param).shape:
        return value  # e.g. Adam's scalar ``step``
    from torch.distributed.tensor import DTensor

    placements = param.placements  # type: ignore[attr-defined]
    return DTensor.from_local(
        value, mesh, placements, run_check=False, shape=param.shape, stride=param.stride()
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable in a checkpoint: {type(value).__name__}")
