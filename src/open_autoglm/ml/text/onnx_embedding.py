"""Embeddings through ONNX Runtime with int8 weights: the fast opt-in path for encoders.

torch's dynamic int8 either loses too much accuracy (every Linear) or gains too little
(attention only) on MiniLM. ONNX Runtime's dynamic int8 with per-channel weights, keeping the
FFN output projections in float32 (their inputs carry the activation outliers), measured ~3x
float32 torch QPS at cosine >= 0.99 (``benchmarks/quantize_minilm.py --onnx``).

The export runs once per model directory and is cached; tokenisation, bucketing and pooling are
the :class:`Embedder`'s, only the encoder forward is replaced.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from open_autoglm.errors import UnavailableError
from open_autoglm.ml.text.embedding import Embedder
from open_autoglm.ml.text.loading import LoadedModel

__all__ = ["OnnxEmbedder", "export_encoder_onnx"]

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # optional dependency: say how to get it
        raise UnavailableError(
            "ONNX embeddings need the optional packages onnxruntime and onnx "
            "(pip install onnxruntime onnx)"
        ) from exc
    return onnxruntime


def export_encoder_onnx(
    loaded: LoadedModel, out_dir: Path, *, int8: bool = True, keep_ffn_fp32: bool = True
) -> Path:
    """Export the encoder's last hidden state to ONNX (optionally int8); cached in ``out_dir``.

    ``keep_ffn_fp32`` leaves the FFN output MatMuls unquantised (the accuracy/speed trade-off
    in the module docstring); False quantises every MatMul.
    """
    _require_onnxruntime()
    from filelock import FileLock

    key = hashlib.sha256(str(loaded.path.resolve()).encode()).hexdigest()[:16]
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / f"encoder-{key}.onnx"
    int8_path = out_dir / f"encoder-{key}-int8{'-keepffn' if keep_ffn_fp32 else ''}.onnx"
    target = int8_path if int8 else fp32
    if target.exists():
        return target
    # Every replica process of a new model gets here at once. One exports, the others wait
    # and find the file: onnxruntime's quantizer writes a scratch "<input>-inferred.onnx"
    # beside its input and deletes it, so two at once broke each other (the first request
    # to a fresh int8 model failed). The temp-and-rename below still keeps a reader that
    # does not take the lock from seeing a half-written graph.
    with FileLock(str(out_dir / f".encoder-{key}.lock")):
        if not target.exists():
            _export_locked(loaded, fp32, int8_path if int8 else None, keep_ffn_fp32)
    return target


def _export_locked(
    loaded: LoadedModel, fp32: Path, int8_path: Path | None, keep_ffn_fp32: bool
) -> None:
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Hidden(torch.nn.Module):
        def __init__(self, model: Any, names: tuple[str, ...]) -> None:
            super().__init__()
            self.model = model
            self.names = names

        def forward(self, *tensors: Any) -> Any:
            kwargs = dict(zip(self.names, tensors, strict=True))
            return self.model(**kwargs).last_hidden_state  # (batch, seq, dim)

    sample = loaded.tokenizer(
        ["a short text", "and a somewhat longer text"], padding=True, return_tensors="pt"
    )
    names = tuple(n for n in _INPUTS if n in sample)
    if not fp32.exists():
        tmp = fp32.with_name(f".{fp32.name}.{os.getpid()}.tmp")
        with warnings.catch_warnings():
            # The TorchScript exporter is "legacy" but needs no onnxscript and handles
            # dynamic batch/sequence axes of HF encoders; tracer warnings are expected.
            warnings.simplefilter("ignore")
            _export(Hidden(loaded.model, names).eval(), sample, names, tmp)
        os.replace(tmp, fp32)
    if int8_path is not None:
        graph = onnx.load(str(fp32)).graph
        ffn_out = [
            n.name
            for n in graph.node
            if n.op_type == "MatMul" and "/output/dense/" in n.name and "attention" not in n.name
        ]
        if not keep_ffn_fp32:
            ffn_out = []
        tmp = int8_path.with_name(f".{int8_path.name}.{os.getpid()}.tmp")
        quantize_dynamic(
            str(fp32),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=ffn_out,
        )
        os.replace(tmp, int8_path)


def _export(module: Any, sample: Any, names: tuple[str, ...], path: Path) -> None:
    import torch

    torch.onnx.export(
        module,
        tuple(sample[n] for n in names),
        str(path),
        input_names=list(names),
        output_names=["hidden"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "hidden"]},
        opset_version=17,
        dynamo=False,
    )


class OnnxEmbedder(Embedder):
    """An :class:`Embedder` whose encoder forward runs in ONNX Runtime."""

    def __init__(
        self, loaded: LoadedModel, onnx_path: Path, *, threads: int = 1, **kwargs: Any
    ) -> None:
        ort = _require_onnxruntime()
        super().__init__(loaded, **kwargs)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.onnx_path = onnx_path
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._names = [i.name for i in self.session.get_inputs()]
        # The torch weights are not needed for inference any more: drop them, keep the tokenizer.
        self._dimension = super().dimension
        self.model = None
        self.loaded = replace(loaded, model=None)

    @property
    def memory_bytes(self) -> int:
        return self.onnx_path.stat().st_size

    @property
    def dimension(self) -> int:
        return self._dimension

    def _hidden_states(self, batch: Any) -> Any:
        import torch

        feeds = {name: batch[name].numpy() for name in self._names}
        return torch.from_numpy(self.session.run(None, feeds)[0])  # (batch, seq, dim)
