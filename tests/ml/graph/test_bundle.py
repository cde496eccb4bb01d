"""Serialisation without pickle, public names, and the import-cost promise."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers.graphs import community_graph
from open_autoglm.errors import ValidationError
from open_autoglm.ml.graph.bundle import (
    pack_graph,
    pack_meta,
    pack_weights,
    unpack_graph,
    unpack_meta,
    unpack_weights,
)
from open_autoglm.ml.training.task import curves_png
from open_autoglm.spec.graph import parse_graph
from open_autoglm.tasks.graph import CURVE_PANELS

MODULES = [
    "open_autoglm.ml.graph.gcn",
    "open_autoglm.ml.graph.sage",
    "open_autoglm.ml.graph.gat",
    "open_autoglm.ml.graph.models",
    "open_autoglm.ml.graph.data",
    "open_autoglm.ml.graph.sampler",
    "open_autoglm.ml.graph.training",
    "open_autoglm.ml.graph.parallel",
    "open_autoglm.ml.graph.bundle",
    "open_autoglm.spec.graph",
    "open_autoglm.spec.graph_loaders",
    "open_autoglm.spec.graph_extend",
    "open_autoglm.tasks.graph",
    "open_autoglm.cli.graph",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    mod = importlib.import_module(name)
    assert mod.__all__ and all(hasattr(mod, n) for n in mod.__all__)


def test_spec_tasks_and_cli_do_not_import_torch() -> None:
    code = (
        "import sys, open_autoglm.spec.graph_loaders, open_autoglm.spec.graph_extend, "
        "open_autoglm.tasks.graph, open_autoglm.cli.graph, open_autoglm.ml.graph; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_graph_round_trips_through_npz() -> None:
    g = parse_graph({**community_graph(n_per_class=4), "split": {"train": ["n-0-é", "n-5-é"]}})
    back = unpack_graph(pack_graph(g))
    assert back.node_ids == g.node_ids and isinstance(back.node_ids[0], str)
    assert np.array_equal(back.edge_index, g.edge_index)
    assert back.features is not None and g.features is not None
    assert np.array_equal(back.features, g.features)
    assert back.label_names == g.label_names
    assert back.splits["train"].sum() == 2
    ints = parse_graph({"nodes": [10, 2**40], "edges": [[10, 2**40]], "directed": True})
    again = unpack_graph(pack_graph(ints))
    assert again.node_ids == (10, 2**40) and again.directed


def test_weights_and_meta() -> None:
    state = {"a.weight": torch.randn(3, 4), "b": torch.arange(5)}
    back = unpack_weights(pack_weights(state))
    assert all(torch.equal(back[k], v) for k, v in state.items())
    assert unpack_meta(pack_meta({"model_config": {"kind": "gcn"}, "x": "ü"}))["x"] == "ü"
    with pytest.raises(ValidationError):
        unpack_meta(b"\x80\x04not json")
    with pytest.raises(ValidationError, match="not a graph model meta"):
        unpack_meta(b"[1]")


def test_curves_png() -> None:
    hist = [
        {
            "epoch": e,
            "loss": 1 / (e + 1),
            "val_loss": 1.0,
            "train_acc": 0.5,
            "val_acc": 0.5,
            "test_acc": 0.4,
        }
        for e in range(5)
    ]
    png = curves_png(hist, CURVE_PANELS, title="t")
    assert png.startswith(b"\x89PNG") and len(png) > 1000
