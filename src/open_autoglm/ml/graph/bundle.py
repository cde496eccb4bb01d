"""Serialise what a trained graph model needs: safetensors weights, an npz graph, JSON meta.

No pickle anywhere: weights go through safetensors, arrays through ``np.savez`` read back
with ``allow_pickle=False``, everything else is JSON.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from open_autoglm.errors import ValidationError
from open_autoglm.spec.graph import GraphData
from open_autoglm.spec.graph_loaders import load_graph_npz

__all__ = [
    "load_state_into",
    "pack_graph",
    "pack_meta",
    "pack_weights",
    "unpack_graph",
    "unpack_meta",
    "unpack_weights",
]


def pack_weights(state: dict[str, Tensor]) -> bytes:
    return st_save({k: v.detach().contiguous().cpu() for k, v in state.items()})


def unpack_weights(data: bytes) -> dict[str, Tensor]:
    return dict(st_load(data))


def pack_graph(graph: GraphData) -> bytes:
    """The graph as npz: ids, canonical edges, features, labels, class names, splits."""
    ids = np.asarray(graph.node_ids)  # int64 or unicode; mixed ids never validate
    arrays: dict[str, Any] = {
        "node_ids": ids,
        "edge_index": graph.edge_index,
        "directed": np.asarray(graph.directed),
    }
    if graph.features is not None:
        arrays["x"] = graph.features
    if graph.labels is not None:
        arrays["y"] = graph.labels
        arrays["label_names"] = np.asarray(graph.label_names)
    for k, m in graph.splits.items():
        arrays[f"{k}_mask"] = m
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def unpack_graph(data: bytes) -> GraphData:
    return load_graph_npz(io.BytesIO(data))


def pack_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")


def unpack_meta(data: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(
            "model meta artifact is not JSON", details=[{"loc": ["meta"], "msg": str(exc)}]
        ) from None
    if not isinstance(meta, dict) or "model_config" not in meta:
        raise ValidationError(
            "artifact is not a graph model meta",
            details=[{"loc": ["meta"], "msg": "no model_config"}],
        )
    return meta


def load_state_into(model: torch.nn.Module, data: bytes) -> None:
    model.load_state_dict(unpack_weights(data))
