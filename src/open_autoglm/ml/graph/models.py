"""The model registry: a :class:`ModelConfig` names a kind and its sizes; ``build_model`` makes it."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from open_autoglm.errors import ValidationError
from open_autoglm.ml.graph.gat import GAT
from open_autoglm.ml.graph.gcn import GCN
from open_autoglm.ml.graph.sage import GraphSAGE

__all__ = ["MODEL_KINDS", "ModelConfig", "ModelKind", "build_model"]


class ModelKind(enum.StrEnum):
    GCN = "gcn"
    SAGE = "sage"
    GAT = "gat"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a trained model's architecture (stored next to weights)."""

    kind: ModelKind
    in_dim: int
    out_dim: int
    hidden: int = 16
    layers: int = 2
    dropout: float = 0.5
    heads: int = 8  # GAT only

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**{**d, "kind": ModelKind(d["kind"])})


def _gcn(c: ModelConfig) -> nn.Module:
    return GCN(c.in_dim, c.out_dim, hidden=c.hidden, layers=c.layers, dropout=c.dropout)


def _sage(c: ModelConfig) -> nn.Module:
    return GraphSAGE(c.in_dim, c.out_dim, hidden=c.hidden, layers=c.layers, dropout=c.dropout)


def _gat(c: ModelConfig) -> nn.Module:
    return GAT(
        c.in_dim, c.out_dim, hidden=c.hidden, layers=c.layers, dropout=c.dropout, heads=c.heads
    )


MODEL_KINDS: dict[ModelKind, Callable[[ModelConfig], nn.Module]] = {
    ModelKind.GCN: _gcn,
    ModelKind.SAGE: _sage,
    ModelKind.GAT: _gat,
}


def build_model(config: ModelConfig) -> nn.Module:
    """Instantiate the registered architecture for ``config.kind``."""
    if config.layers < 1:
        raise ValidationError(
            "a model needs at least one layer", details=[{"loc": ["layers"], "msg": ">= 1"}]
        )
    return MODEL_KINDS[ModelKind(config.kind)](config)
