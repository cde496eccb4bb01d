"""Serialise a trained temporal model's event store: npz of user ids, times and features.

Weights and meta JSON go through :mod:`open_autoglm.ml.graph.bundle` (safetensors, JSON);
the event store is an ``.npz`` read back with ``allow_pickle=False``. Events hold user ids,
not indices, so appending events with new nodes never invalidates the stored ones.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from open_autoglm.spec.event_loaders import load_events_npz
from open_autoglm.spec.events import EventPolicy, EventStream, validate_event_arrays

__all__ = ["append_events", "pack_events", "unpack_events"]


def _user_ids(stream: EventStream) -> np.ndarray[Any, Any]:
    return np.asarray(stream.node_ids)  # int64 or unicode: validated ids are never mixed


def pack_events(stream: EventStream) -> bytes:
    ids = _user_ids(stream)
    arrays: dict[str, Any] = {"src": ids[stream.src], "dst": ids[stream.dst], "t": stream.t}
    if stream.edge_features is not None:
        arrays["edge_features"] = stream.edge_features
    if stream.labels is not None:
        arrays["labels"] = stream.labels
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def unpack_events(data: bytes) -> EventStream:
    return load_events_npz(io.BytesIO(data))


def append_events(store: EventStream, new: EventStream) -> EventStream:
    """The store with ``new`` events merged in time order (new node ids allowed).

    Edge-feature widths must agree; a store without features takes new events without
    features only.
    """
    old_ids, new_ids = _user_ids(store), _user_ids(new)
    if old_ids.dtype.kind != new_ids.dtype.kind:
        old_ids, new_ids = old_ids.astype(str), new_ids.astype(str)
    features = None
    if store.edge_features is not None or new.edge_features is not None:
        width = store.edge_dim or new.edge_dim
        a = (
            store.edge_features
            if store.edge_features is not None
            else np.zeros((store.num_events, width), np.float32)
        )
        b = (
            new.edge_features
            if new.edge_features is not None
            else np.zeros((new.num_events, width), np.float32)
        )
        if a.shape[1] != b.shape[1]:
            from open_autoglm.errors import ValidationError

            raise ValidationError(
                "appended events have the wrong edge-feature width",
                details=[
                    {
                        "loc": ["append", "features"],
                        "msg": f"expected width {a.shape[1]}, got {b.shape[1]}",
                    }
                ],
            )
        features = np.concatenate([a, b])
    return validate_event_arrays(
        np.concatenate([old_ids[store.src], new_ids[new.src]]),
        np.concatenate([old_ids[store.dst], new_ids[new.dst]]),
        np.concatenate([store.t, new.t]),
        edge_features=features,
        policy=EventPolicy(),
    )
