"""The events a model may look at: a neighbour index plus per-event features.

Training sees only the training events; evaluation and prediction see the whole stream
(every event stays strictly in the past of its query through the sampler). Streams without
edge features get one constant zero feature per event, so models need no special case for a
zero-width message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from open_autoglm.ml.temporal.sampler import TemporalNeighborSampler
from open_autoglm.spec.events import EventStream

__all__ = ["EventHistory", "event_features"]


def event_features(stream: EventStream) -> Tensor:
    """(E, max(edge_dim, 1)) float32: the stream's edge features, or zeros of width 1."""
    if stream.edge_features is None:
        return torch.zeros(stream.num_events, 1)
    return torch.from_numpy(np.array(stream.edge_features, dtype=np.float32))


@dataclass
class EventHistory:
    """Neighbour index over visible events; ``features``/``t`` are indexed by event id."""

    sampler: TemporalNeighborSampler
    features: Tensor  # (E_all, edge_dim >= 1)
    t: npt.NDArray[np.float64]  # (E_all,)

    @classmethod
    def of(cls, stream: EventStream, mask: npt.NDArray[np.bool_] | None = None) -> EventHistory:
        """History of ``stream``'s events where ``mask`` (default: all) is true."""
        ids = np.arange(stream.num_events) if mask is None else np.flatnonzero(mask)
        sampler = TemporalNeighborSampler(
            stream.src[ids], stream.dst[ids], stream.t[ids], stream.num_nodes, event_ids=ids
        )
        return cls(sampler, event_features(stream), np.asarray(stream.t))

    @property
    def edge_dim(self) -> int:
        return int(self.features.shape[1])
