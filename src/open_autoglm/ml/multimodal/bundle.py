"""Serialise a trained fusion model: safetensors weights and one JSON meta document.

The meta holds everything prediction needs besides the weights: the strategy, the model
sizes (:class:`FusionConfig`), the preprocessing state (vocabularies, scalers, classes) and
the text model it was trained over. No pickle: tensors through safetensors, the rest JSON.
"""

from __future__ import annotations

import json
from typing import Any

from open_autoglm.errors import ValidationError

__all__ = ["META_FORMAT", "pack_meta", "pack_weights", "unpack_meta", "unpack_weights"]

META_FORMAT = "open-autoglm/fusion-model/1"


def pack_weights(state: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous().cpu() for k, v in state.items()})


def unpack_weights(data: bytes) -> dict[str, Any]:
    from safetensors.torch import load

    return dict(load(data))


def pack_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps({**meta, "format": META_FORMAT}, sort_keys=True).encode("utf-8")


def unpack_meta(data: bytes) -> dict[str, Any]:
    """The meta document, checked to be a fusion model's."""
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(
            "model meta artifact is not JSON",
            details=[{"loc": ["params", "meta"], "msg": str(exc)}],
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise ValidationError(
            "artifact is not a fusion model's meta",
            details=[{"loc": ["params", "meta"], "msg": f"expected format {META_FORMAT}"}],
        )
    return meta
