"""A graph job feeds each rank the features its model takes: CSR rows to SAGE, dense to GCN."""

from __future__ import annotations

import pytest
import torch

from open_autoglm.ml.graph.data import GraphTensors
from open_autoglm.ml.graph.features import SparseFeatures
from open_autoglm.ml.graph.job import GraphJob
from open_autoglm.ml.graph.models import ModelConfig, ModelKind, build_model
from open_autoglm.ml.graph.training import TrainConfig

torch.set_num_threads(1)


def _bag_of_words_graph(nodes: int = 40, dim: int = 200) -> GraphTensors:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(nodes, dim, generator=g) < 0.02).float()  # (nodes, dim), ~2% non-zero
    idx = torch.arange(nodes)
    return GraphTensors(
        x=x,
        edge_index=torch.randint(0, nodes, (2, 120), generator=g),
        y=idx % 3,
        train_idx=idx[:24],
        val_idx=idx[24:32],
        test_idx=idx[32:],
        num_classes=3,
    )


@pytest.mark.parametrize("kind,sparse", [(ModelKind.SAGE, True), (ModelKind.GCN, False)])
def test_features_follow_what_the_model_takes(kind: ModelKind, sparse: bool) -> None:
    data = _bag_of_words_graph()
    job = GraphJob(data, build_model(ModelConfig(kind, 200, 3, hidden=8)), TrainConfig(epochs=1))
    x, _, seeds, _ = job.collate(data.train_idx.tolist(), torch.Generator())
    assert isinstance(x, SparseFeatures) is sparse
    torch.testing.assert_close(x.to_dense() if sparse else x, data.x)
    assert torch.equal(seeds, data.train_idx)
    metrics = job.evaluate(job.build_model())  # evaluation uses the same features
    assert set(metrics) >= {"val_acc", "val_loss"}
