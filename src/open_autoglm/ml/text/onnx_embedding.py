"""Embeddings through ONNX Runtime with int8 weights: the fast opt-in path for encoders.

torch's dynamic int8 either loses too much accuracy (every Linear) or gains too little
(attention only) on MiniLM. ONNX Runtime's dynamic int8 with per-channel weights, keeping in
float32 the Linears whose inputs carry the activation outliers, measured ~3x float32 torch
QPS at cosine >= 0.99 (``benchmarks/quantize_minilm.py --onnx``). Kept in float32: every
FFN's output projection, and the first layer's FFN input projection (the embeddings' outlier
channels reach it almost unchanged). Over the 512 benchmark sentences in calls of 8 and 32,
the FFN outputs alone gave cosine min 0.9895 / 0.9906 (mean 0.996); with the first FFN input
too, 0.9940 / 0.9934, at the same speed, and 0.9918-0.9930 on two other sets of 1024
generated sentences. Each other Linear tried in float32 instead (a whole layer, the attention
outputs, the values) cost speed for less; quantising two of the FFN outputs too was 12%
faster and held 0.9914 on the benchmark's sentences but fell to 0.9889 on the other sets.

The export runs once per model directory and is cached; tokenisation, bucketing and pooling are
the :class:`Embedder`'s, only the encoder forward is replaced. BERT encoders are exported
packed (:func:`~open_autoglm.ml.text.embedding.packed_hidden`: Linears over unpadded token
rows), so int8 and float32 gain from packing alike; other encoders as the padded forward.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from open_autoglm.errors import UnavailableError
from open_autoglm.ml.text.embedding import (
    PACKED_INPUTS,
    Embedder,
    Pooling,
    pack_inputs,
    packable,
    packed_hidden,
)
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

    ``keep_ffn_fp32`` leaves the outlier-prone FFN projections unquantised (the
    accuracy/speed trade-off in the module docstring); False quantises every Linear.
    """
    _require_onnxruntime()
    from filelock import FileLock

    key = hashlib.sha256(str(loaded.path.resolve()).encode()).hexdigest()[:16]
    if packable(loaded.model):
        key += "-packed"  # another graph (inputs, shapes) than the padded export
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / f"encoder-{key}.onnx"
    int8_path = out_dir / f"encoder-{key}-int8{'-keepffn2' if keep_ffn_fp32 else ''}.onnx"
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

    class PackedHidden(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return packed_hidden(self.model, dict(zip(PACKED_INPUTS, tensors, strict=True)))

    texts = ["a short text", "and a somewhat longer text"]
    if not fp32.exists():
        tmp = fp32.with_name(f".{fp32.name}.{os.getpid()}.tmp")
        with warnings.catch_warnings():
            # The TorchScript exporter is "legacy" but needs no onnxscript and handles
            # dynamic batch/sequence axes of HF encoders; tracer warnings are expected.
            warnings.simplefilter("ignore")
            if packable(loaded.model):
                packed = pack_inputs(loaded.tokenizer(texts), [0, 1])
                axes = {"gather": {0: "slots"}, "mask": {0: "texts", 3: "longest"}}
                for name in ("input_ids", "token_type_ids", "position_ids", "scatter", "hidden"):
                    axes[name] = {0: "tokens"}
                _export(PackedHidden(loaded.model).eval(), packed, PACKED_INPUTS, axes, tmp)
            else:
                sample = loaded.tokenizer(texts, padding=True, return_tensors="pt")
                names = tuple(n for n in _INPUTS if n in sample)
                axes = {n: {0: "batch", 1: "seq"} for n in [*names, "hidden"]}
                _export(Hidden(loaded.model, names).eval(), sample, names, axes, tmp)
        os.replace(tmp, fp32)
    if int8_path is not None:
        kept = (
            _outlier_projections(onnx.load(str(fp32)).graph, loaded.model.config)
            if keep_ffn_fp32
            else []
        )
        tmp = int8_path.with_name(f".{int8_path.name}.{os.getpid()}.tmp")
        quantize_dynamic(
            str(fp32),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=kept,
        )
        os.replace(tmp, int8_path)


def _outlier_projections(graph: Any, config: Any) -> list[str]:
    """Names of the nodes int8 keeps in float32: each FFN's output projection (intermediate
    -> hidden) and the first FFN's input projection (hidden -> intermediate).

    Found by weight shape, not by name: the packed export's node names carry no layer path
    (``/output/dense/Gemm`` is also the attention output's). Linears over 2-D rows export as
    ``Gemm`` (ONNX Runtime ran the packed fp32 graph ~10% faster that way than as 3-D ``MatMul``),
    which onnxruntime's quantizer first rewrites to a ``MatMul`` named ``<name>_MatMul``:
    both names are listed.
    """
    dims = {init.name: list(init.dims) for init in graph.initializer}
    inner, hidden = config.intermediate_size, config.hidden_size
    found: list[str] = []
    first_up = True
    for node in graph.node:  # in graph order: layer after layer
        if node.op_type not in ("Gemm", "MatMul") or len(node.input) < 2:
            continue
        weight = dims.get(node.input[1])
        if weight is None or len(weight) != 2:
            continue
        trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        shape = (weight[1], weight[0]) if trans_b else (weight[0], weight[1])  # (in, out)
        keep = shape == (inner, hidden) or (first_up and shape == (hidden, inner))
        first_up = first_up and shape != (hidden, inner)
        if keep:
            found.append(node.name)
            if node.op_type == "Gemm":
                found.append(f"{node.name}_MatMul")
    return found


def _export(
    module: Any, sample: Any, names: tuple[str, ...], axes: dict[str, Any], path: Path
) -> None:
    import torch

    torch.onnx.export(
        module,
        tuple(sample[n] for n in names),
        str(path),
        input_names=list(names),
        output_names=["hidden"],
        dynamic_axes=axes,
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
        self.graph_packed = "gather" in self._names
        self.packed = self.packed and self.graph_packed
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

    def _packed_hidden_states(self, inputs: dict[str, Any]) -> Any:
        import torch

        feeds = {name: inputs[name].numpy() for name in self._names}
        return torch.from_numpy(self.session.run(None, feeds)[0])  # (tokens, dim)

    def _pooled(self, encoded: Any, chunk: list[int], mode: Pooling, *, packed: bool) -> Any:
        # A packed graph takes packs only: unbucketed chunks are packed as they come.
        return super()._pooled(encoded, chunk, mode, packed=packed or self.graph_packed)
