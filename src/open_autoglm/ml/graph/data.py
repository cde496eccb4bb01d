"""Torch views of a validated graph: features, message edges, labels and split indices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from open_autoglm.spec.graph import GraphData

__all__ = ["GraphTensors", "row_normalize"]


def row_normalize(x: Tensor) -> Tensor:
    """Scale each row to unit L1 norm (zero rows stay zero), as GCN and GAT preprocess features.

    For the non-negative bag-of-words features of the papers this is "divide by the row sum";
    the absolute value keeps signed features from dividing by a near-zero sum.
    """
    s = x.abs().sum(dim=1, keepdim=True)  # (nodes, 1)
    return x / torch.where(s == 0, torch.ones_like(s), s)


@dataclass(frozen=True)
class GraphTensors:
    """Tensors a trainer consumes. ``*_idx`` are node indices of each split."""

    x: Tensor  # (nodes, features) float32
    edge_index: Tensor  # (2, E) int64, both directions for undirected graphs
    y: Tensor  # (nodes,) int64, -1 = unlabeled
    train_idx: Tensor
    val_idx: Tensor
    test_idx: Tensor
    num_classes: int

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def from_graph(cls, graph: GraphData, *, normalize: bool = True, seed: int = 0) -> GraphTensors:
        """Build tensors; without a stored split, labeled nodes split 60/20/20 by ``seed``."""
        n = graph.num_nodes
        if graph.features is None:
            x = torch.eye(n)  # featureless graphs: one-hot identity, transductive only
        else:
            x = torch.from_numpy(np.array(graph.features, dtype=np.float32))
        if normalize:
            x = row_normalize(x)
        y = (
            torch.from_numpy(np.array(graph.labels, dtype=np.int64))
            if graph.labels is not None
            else torch.full((n,), -1, dtype=torch.int64)
        )
        labeled = torch.nonzero(y >= 0).flatten()
        splits = {k: torch.from_numpy(np.array(v)) for k, v in graph.splits.items()}
        if "train" in splits:
            idx = {k: torch.nonzero(splits[k] & (y >= 0)).flatten() for k in splits}
            train = idx["train"]
            val = idx.get("val", train)  # no val split: monitor on train
            test = idx.get("test", torch.empty(0, dtype=torch.int64))
        else:
            g = torch.Generator().manual_seed(seed)
            perm = labeled[torch.randperm(labeled.numel(), generator=g)]
            a, b = int(0.6 * perm.numel()), int(0.8 * perm.numel())
            train, val, test = perm[:a], perm[a:b], perm[b:]
            if val.numel() == 0:
                val = train
        ei = torch.from_numpy(np.array(graph.message_edge_index(), dtype=np.int64))
        return cls(
            x=x.contiguous(),
            edge_index=ei,
            y=y,
            train_idx=train,
            val_idx=val,
            test_idx=test,
            num_classes=max(graph.num_classes, 1),
        )

    def share_memory_(self) -> GraphTensors:
        """Move tensors to shared memory so worker processes map them instead of copying."""
        for t in (self.x, self.edge_index, self.y, self.train_idx, self.val_idx, self.test_idx):
            t.share_memory_()  # type: ignore[no-untyped-call]
        return self
