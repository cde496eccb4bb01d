"""Vectorized CSR neighbor sampling for mini-batch GNN training.

PyG's ``NeighborLoader`` needs pyg-lib or torch-sparse; this sampler needs neither. For each
hop it draws up to ``fanout`` distinct in-neighbors of every frontier node at once, with
tensor ops only (no Python loop per node), and returns one subgraph in PyG's layout: seed
nodes first, edges in local indices, so the same model runs full-batch or sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CSRGraph", "NeighborSampler", "SampledSubgraph"]


@dataclass(frozen=True)
class CSRGraph:
    """In-neighbor CSR: the sources of edges into node ``v`` are ``col[rowptr[v]:rowptr[v+1]]``."""

    rowptr: Tensor  # (nodes + 1,) int64
    col: Tensor  # (E,) int64

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: int) -> CSRGraph:
        src, dst = edge_index
        order = torch.argsort(dst, stable=True)
        counts = torch.bincount(dst, minlength=num_nodes)  # (nodes,)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
        rowptr[1:] = torch.cumsum(counts, 0)
        return cls(rowptr=rowptr, col=src[order].contiguous())

    @property
    def num_nodes(self) -> int:
        return int(self.rowptr.numel() - 1)

    def share_memory_(self) -> CSRGraph:
        self.rowptr.share_memory_()  # type: ignore[no-untyped-call]
        self.col.share_memory_()  # type: ignore[no-untyped-call]
        return self


@dataclass(frozen=True)
class SampledSubgraph:
    """``n_id[:batch_size]`` are the seeds; ``edge_index`` (2, E_sub) indexes into ``n_id``."""

    n_id: Tensor  # (sub_nodes,) global node ids
    edge_index: Tensor  # (2, E_sub) local ids, messages flow row 0 -> row 1
    batch_size: int


class NeighborSampler:
    """Sample ``fanouts[h]`` in-neighbors per node at hop ``h`` (-1 = all), without replacement.

    Not thread-safe: it keeps one global-to-local scratch array, reset after every batch,
    so a batch costs O(sampled nodes + sampled edges), never O(graph).
    """

    def __init__(self, csr: CSRGraph, fanouts: Sequence[int]) -> None:
        self.csr = csr
        self.fanouts = list(fanouts)
        self._local = torch.full((csr.num_nodes,), -1, dtype=torch.int64)  # (nodes,)

    def _sample_hop(
        self, nodes: Tensor, fanout: int, gen: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Return (src, dst) global ids of the sampled edges into ``nodes``."""
        rowptr, col = self.csr.rowptr, self.csr.col
        start = rowptr[nodes]  # (k,)
        deg = rowptr[nodes + 1] - start  # (k,)
        seg = torch.repeat_interleave(torch.arange(nodes.numel()), deg)  # (total,)
        seg_start = torch.cumsum(deg, 0) - deg  # (k,) first slot of each node's run
        offs = torch.arange(seg.numel()) - seg_start[seg]  # (total,) position within the run
        if fanout >= 0:
            # random keys, sorted within each node's run; keep the first `fanout` of each run
            key = torch.rand(seg.numel(), generator=gen, dtype=torch.float64)
            order = torch.argsort(seg.to(torch.float64) + key)
            keep = order[offs < fanout]  # offs is the rank after the sort: runs stay in place
        else:
            keep = torch.arange(seg.numel())
        src = col[start[seg[keep]] + offs[keep]]
        dst = nodes[seg[keep]]
        return src, dst

    def sample(self, seeds: Tensor, generator: torch.Generator | None = None) -> SampledSubgraph:
        """Sample the multi-hop neighborhood of ``seeds`` (distinct global node ids)."""
        local = self._local
        n_id = [seeds]
        local[seeds] = torch.arange(seeds.numel())
        count = seeds.numel()
        frontier = seeds
        srcs: list[Tensor] = []
        dsts: list[Tensor] = []
        for fanout in self.fanouts:
            src, dst = self._sample_hop(frontier, fanout, generator)
            new = torch.unique(src[local[src] < 0])  # nodes first reached at this hop
            local[new] = torch.arange(count, count + new.numel())
            count += new.numel()
            n_id.append(new)
            srcs.append(local[src])
            dsts.append(local[dst])
            frontier = new
            if frontier.numel() == 0:
                break
        all_ids = torch.cat(n_id)
        local[all_ids] = -1  # reset only what we touched
        edge_index = torch.stack([torch.cat(srcs), torch.cat(dsts)])  # (2, E_sub)
        return SampledSubgraph(n_id=all_ids, edge_index=edge_index, batch_size=seeds.numel())
