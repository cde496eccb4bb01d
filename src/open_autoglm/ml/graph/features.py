"""Sparse node features: bag-of-words rows kept as CSR, so a first layer costs O(nonzeros).

Citation graphs have thousands of binary word features per node and ~1% of them set
(CiteSeer: 3,703 columns, ~32 nonzeros a row). Dense, one first-layer linear map on a
sampled batch is a (nodes x 3,703) @ (3,703 x hidden) product plus a (nodes x 3,703) dropout
mask and a 3,703-wide neighbour mean; sparse, it is an ``embedding_bag`` over the nonzeros.
The model is unchanged: ``linear`` computes exactly ``x @ W.T`` and ``dropout`` draws the
same distribution as ``F.dropout`` on the dense rows (zeros stay zero either way).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SparseFeatures", "worth_sparse"]

# below this share of nonzeros a sparse first layer beats the dense matmul on CPU
_MAX_DENSITY = 0.1


def worth_sparse(x: Tensor) -> bool:
    """True when ``x`` (nodes, features) is sparse enough for :class:`SparseFeatures`."""
    return x.dim() == 2 and x.numel() > 0 and float((x != 0).float().mean()) <= _MAX_DENSITY


@dataclass(frozen=True)
class SparseFeatures:
    """Rows of a (nodes, features) matrix in CSR: row ``i`` is ``col/val[rowptr[i]:rowptr[i+1]]``."""

    rowptr: Tensor  # (nodes + 1,) int64
    col: Tensor  # (nnz,) int64
    val: Tensor  # (nnz,) float32
    num_cols: int

    @classmethod
    def from_dense(cls, x: Tensor) -> SparseFeatures:
        rows, cols = torch.nonzero(x, as_tuple=True)  # row-major order
        rowptr = torch.zeros(x.shape[0] + 1, dtype=torch.int64)
        rowptr[1:] = torch.cumsum(torch.bincount(rows, minlength=x.shape[0]), 0)
        return cls(rowptr, cols.contiguous(), x[rows, cols].contiguous(), int(x.shape[1]))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.rowptr.numel() - 1), self.num_cols)

    def to_dense(self) -> Tensor:
        n = self.shape[0]
        rows = torch.repeat_interleave(torch.arange(n), self.rowptr.diff())
        out = torch.zeros(self.shape, dtype=self.val.dtype)
        out[rows, self.col] = self.val
        return out

    def __getitem__(self, idx: Tensor) -> SparseFeatures:
        """The rows ``idx`` (int64 node ids), in that order: O(their nonzeros)."""
        start = self.rowptr[idx]  # (k,)
        count = self.rowptr[idx + 1] - start  # (k,)
        rowptr = torch.zeros(idx.numel() + 1, dtype=torch.int64)
        rowptr[1:] = torch.cumsum(count, 0)
        # position j of the output row r reads input slot start[r] + j
        seg = torch.repeat_interleave(torch.arange(idx.numel()), count)  # (nnz_out,)
        src = start[seg] + torch.arange(seg.numel()) - rowptr[:-1][seg]
        return SparseFeatures(rowptr, self.col[src], self.val[src], self.num_cols)

    def dropout(self, p: float, training: bool) -> SparseFeatures:
        """``F.dropout`` on the rows: each nonzero kept with probability ``1 - p``, rescaled."""
        if not training or p == 0.0:
            return self
        return SparseFeatures(self.rowptr, self.col, F.dropout(self.val, p, True), self.num_cols)

    def linear(self, weight: Tensor) -> Tensor:
        """``x @ weight.T`` for ``weight`` (out, features); returns (nodes, out)."""
        return F.embedding_bag(
            self.col,
            weight.t().contiguous(),  # (features, out); a strided view makes it ~1.5x slower
            self.rowptr[:-1],
            mode="sum",
            per_sample_weights=self.val,
            include_last_offset=False,
        )

    def share_memory_(self) -> SparseFeatures:
        for t in (self.rowptr, self.col, self.val):
            t.share_memory_()  # type: ignore[no-untyped-call]
        return self
