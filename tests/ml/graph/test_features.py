"""Sparse feature rows: exact round trips, row gathers, and the same SAGE function as dense."""

from __future__ import annotations

import torch

from open_autoglm.ml.graph.features import SparseFeatures, worth_sparse
from open_autoglm.ml.graph.sage import GraphSAGE

torch.set_num_threads(1)


def bag_of_words(nodes: int = 50, dim: int = 300, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(nodes, dim, generator=g) < 0.02).float() * torch.rand(nodes, dim, generator=g)
    x[7] = 0  # an empty row, mid-matrix
    x[-1] = 0  # and a trailing one
    return x


def test_round_trip_gather_and_linear() -> None:
    x = bag_of_words()
    sf = SparseFeatures.from_dense(x)
    assert sf.shape == (50, 300) and worth_sparse(x) and not worth_sparse(torch.ones(3, 3))
    assert torch.equal(sf.to_dense(), x)
    idx = torch.tensor([49, 7, 3, 3, 0])
    assert torch.equal(sf[idx].to_dense(), x[idx])
    w = torch.randn(16, 300)
    torch.testing.assert_close(sf[idx].linear(w), x[idx] @ w.T)


def test_dropout_keeps_zeros_and_rescales() -> None:
    sf = SparseFeatures.from_dense(bag_of_words())
    assert sf.dropout(0.5, training=False) is sf
    torch.manual_seed(0)
    dropped = sf.dropout(0.5, training=True)
    kept = dropped.val != 0
    assert 0 < int(kept.sum()) < sf.val.numel()
    torch.testing.assert_close(dropped.val[kept], 2 * sf.val[kept])


def test_sage_sparse_and_dense_agree_with_gradients() -> None:
    x = bag_of_words()
    edge_index = torch.randint(0, 50, (2, 200), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = GraphSAGE(300, 4, hidden=8, layers=2).eval()
    dense = model(x, edge_index)
    dense.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    sparse = model(SparseFeatures.from_dense(x), edge_index)
    sparse.square().sum().backward()
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-4)
    for g, p in zip(grads, (p for p in model.parameters() if p.grad is not None), strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)
