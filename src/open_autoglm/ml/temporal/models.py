"""The temporal model registry: a config names a kind, the registry builds it."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

__all__ = ["LEARNED_KINDS", "TemporalModelConfig", "TemporalModelKind", "build_temporal_model"]


class TemporalModelKind(enum.StrEnum):
    TGAT = "tgat"
    TGN = "tgn"
    EDGEBANK = "edgebank"


LEARNED_KINDS = frozenset({TemporalModelKind.TGAT, TemporalModelKind.TGN})


@dataclass(frozen=True)
class TemporalModelConfig:
    """Everything needed to rebuild a model before loading its weights."""

    kind: TemporalModelKind
    num_nodes: int
    edge_dim: int = 1  # width of the per-event features (1 = the constant zero feature)
    dim: int = 100  # node embedding width (TGN: memory and embedding width)
    time_dim: int = 100
    layers: int = 1  # TGAT attention layers
    heads: int = 2
    neighbors: int = 10
    strategy: str = "recent"  # TGAT sampling: recent or uniform (TGN: always most recent)
    dropout: float = 0.1
    drop_edge: float = 0.1  # time-aware DropEdge rate on sampled neighbours, training only
    cooccurrence: bool = True  # decoder sees neighbour co-occurrence counts (decoder.py)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = str(self.kind)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TemporalModelConfig:
        return cls(**{**raw, "kind": TemporalModelKind(raw["kind"])})


def _tgat(cfg: TemporalModelConfig) -> nn.Module:
    from open_autoglm.ml.temporal.tgat import TGAT

    return TGAT(cfg)


def _tgn(cfg: TemporalModelConfig) -> nn.Module:
    from open_autoglm.ml.temporal.tgn import TGN

    return TGN(cfg)


_BUILDERS: dict[TemporalModelKind, Callable[[TemporalModelConfig], nn.Module]] = {
    TemporalModelKind.TGAT: _tgat,
    TemporalModelKind.TGN: _tgn,
}


def build_temporal_model(cfg: TemporalModelConfig) -> nn.Module:
    """A fresh learned model (EdgeBank has no weights; see ``edgebank.py``)."""
    if cfg.kind not in _BUILDERS:
        raise ValueError(f"{cfg.kind} has no trainable model")
    return _BUILDERS[cfg.kind](cfg)
