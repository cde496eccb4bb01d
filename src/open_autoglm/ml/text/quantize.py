"""Opt-in int8 inference: dynamic quantization of ``nn.Linear`` layers on CPU.

Weights are stored as int8 and activations quantised on the fly per batch, which speeds up
matmul-bound encoders on CPU at a small accuracy cost. It is opt-in (``quantize: "int8"`` in
a model entry's options) because the gain depends on the CPU's int8 kernels; the benchmark
``benchmarks/quantize_minilm.py`` measures QPS and cosine against float32 on the spot.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from open_autoglm.errors import UnavailableError
from open_autoglm.ml.text.loading import LoadedModel

__all__ = ["attention_only", "quantize_dynamic_int8", "quantize_loaded"]


def attention_only(name: str) -> bool:
    """Quantise only attention projections: FFN layers carry the activation outliers that
    per-tensor int8 activations handle worst (MiniLM cosine 0.95 -> 0.993 at a lower speedup)."""
    return ".attention." in f".{name}."


def quantize_dynamic_int8(model: Any, *, include: Callable[[str], bool] | None = None) -> Any:
    """Return a copy of ``model`` with ``nn.Linear`` layers replaced by dynamic int8 Linears.

    Weights are quantised per output channel. ``include(name)`` picks which Linear layers
    (by module name) are quantised; None means all of them.
    """
    import torch

    engines = torch.backends.quantized.supported_engines
    engine = next((e for e in ("fbgemm", "x86", "qnnpack") if e in engines), None)
    if engine is None:
        raise UnavailableError(f"no int8 CPU engine in this torch build (have {engines})")
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the API still works here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {
            name: per_channel_dynamic_qconfig
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and (include is None or include(name))
        }
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=False).eval()  # type: ignore[no-untyped-call]


def quantize_loaded(
    loaded: LoadedModel, *, include: Callable[[str], bool] | None = None
) -> LoadedModel:
    """The same loaded model with its Linear layers in dynamic int8."""
    return replace(loaded, model=quantize_dynamic_int8(loaded.model, include=include))
