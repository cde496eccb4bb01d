"""Embeddings through ONNX Runtime with int8 weights: the fast opt-in path for encoders.

torch's dynamic int8 either loses too much accuracy (every Linear) or gains too little
(attention only). ONNX Runtime's dynamic int8 (per-channel weights, one scale per call for
each Linear's input) is fast, but a trained BERT's activations have a few outlier channels
far larger than the rest, and one int8 scale over such an input spends its range on those
few. So the int8 graph computes them apart, in float32 (:func:`find_outliers`,
:func:`split_outliers`, after LLM.int8()'s decomposition, with the channels fixed once from a
few sentences): four hidden dimensions of each Q/K/V and FFN input and eight FFN channels per
layer; every big Linear runs in int8. ``benchmarks/quantize_minilm.py --onnx`` measures the
cosine to float32 and the speed.

The export runs once per model directory and is cached; tokenisation, bucketing and pooling are
the :class:`Embedder`'s, only the encoder forward is replaced. BERT encoders are exported
packed (:func:`~open_autoglm.ml.text.embedding.packed_hidden`: Linears over unpadded token
rows, Q/K/V fused into one), so int8 and float32 gain from packing alike; other encoders as
the padded forward, whose int8 keeps the FFN output projections in float32 instead.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, replace
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

__all__ = [
    "INNER_OUTLIERS",
    "INPUT_OUTLIERS",
    "OnnxEmbedder",
    "Outliers",
    "export_encoder_onnx",
    "find_outliers",
    "fused_qkv",
    "split_outliers",
]

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


INNER_OUTLIERS = 8
"""Per layer, FFN channels (after the activation) that int8 computes in float32."""
INPUT_OUTLIERS = 4
"""Per layer, hidden dimensions of the Q/K/V and FFN inputs that int8 computes in float32."""

# Plain sentences for finding the outlier channels. The channels belong to the model, not to
# the text: other sentences (generated ones, product reviews) picked the same largest ones.
_CALIBRATION = (
    "The quick brown fox jumps over the lazy dog.",
    "What time does the train to Berlin leave tomorrow morning?",
    "Prices rose 3.2% in October, the fastest pace since 2023.",
    "I bought this jacket last week and it already lost a button!",
    "Graph neural networks pass messages between neighbouring nodes.",
    "Please restart the server, then run the tests again.",
    'She said: "we\'ll meet at 10:30 near the old bridge".',
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The committee approved the budget after a long debate on Tuesday night.",
    "Error 404: the page you requested could not be found.",
    "My grandmother's recipe uses two cups of flour, three eggs and a pinch of salt.",
    "Stock markets in Asia closed lower as investors waited for the central bank's decision.",
    "Is it safe to swim here?",
    "The museum's new wing displays paintings from the early twentieth century.",
    "Rain is expected across the north, with temperatures falling to 5 degrees.",
    "Thanks so much for your help yesterday, it really made a difference.",
)


def export_encoder_onnx(
    loaded: LoadedModel, out_dir: Path, *, int8: bool = True, outliers_fp32: bool = True
) -> Path:
    """Export the encoder's last hidden state to ONNX (optionally int8); cached in ``out_dir``.

    ``outliers_fp32`` computes the outlier channels in float32 (module docstring); False
    quantises every Linear whole.
    """
    _require_onnxruntime()
    from filelock import FileLock

    packed = packable(loaded.model)
    key = hashlib.sha256(str(loaded.path.resolve()).encode()).hexdigest()[:16]
    if packed:
        key += "-packed-qkv"  # another graph (inputs, shapes) than the padded export
    out_dir.mkdir(parents=True, exist_ok=True)
    if not int8:
        target = out_dir / f"encoder-{key}.onnx"
    elif not outliers_fp32:
        target = out_dir / f"encoder-{key}-int8.onnx"
    elif packed:
        target = out_dir / f"encoder-{key}-int8-outliers{INNER_OUTLIERS}x{INPUT_OUTLIERS}.onnx"
    else:
        target = out_dir / f"encoder-{key}-int8-keepffn2.onnx"
    if target.exists():
        return target
    # Every replica process of a new model gets here at once. One exports, the others wait
    # and find the file: onnxruntime's quantizer writes a scratch "<input>-inferred.onnx"
    # beside its input and deletes it, so two at once broke each other (the first request
    # to a fresh int8 model failed). The temp-and-rename below still keeps a reader that
    # does not take the lock from seeing a half-written graph.
    with FileLock(str(out_dir / f".encoder-{key}.lock")):
        if not target.exists():
            split = int8 and outliers_fp32 and packed
            _export_locked(loaded, out_dir / f"encoder-{key}.onnx", target, outliers_fp32, split)
    return target


def _export_locked(
    loaded: LoadedModel, fp32: Path, target: Path, outliers_fp32: bool, split: bool
) -> None:
    """Write ``target``: the float32 graph, or int8 quantised from it or (``split``) from a
    :func:`split_outliers` graph of its own."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = fp32
    if split:  # a graph of its own, only quantised: removed once the int8 graph exists
        source = target.with_name(f".{target.stem}.{os.getpid()}.fp32.onnx")
        _export_graph(loaded, source, split=True)
    elif not fp32.exists():
        _export_graph(loaded, fp32, split=False)
    if target == fp32:
        return
    kept: list[str] = []
    if split:
        kept = _split_float_nodes(onnx.load(str(source)).graph, loaded.model.config)
    elif outliers_fp32:
        kept = _outlier_projections(onnx.load(str(fp32)).graph, loaded.model.config)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=kept,
        )
        os.replace(tmp, target)
    finally:
        if split:
            source.unlink(missing_ok=True)


def _export_graph(loaded: LoadedModel, path: Path, *, split: bool) -> None:
    """Export ``loaded``'s encoder to ``path`` (temp file, then rename).

    Packable encoders are exported packed, each layer's Q/K/V as one Linear; ``split``
    exports :func:`split_outliers` instead (for int8).
    """
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self, model: Any, names: tuple[str, ...]) -> None:
            super().__init__()
            self.model = model
            self.names = names

        def forward(self, *tensors: Any) -> Any:
            kwargs = dict(zip(self.names, tensors, strict=True))
            return self.model(**kwargs).last_hidden_state  # (batch, seq, dim)

    class PackedHidden(torch.nn.Module):
        def __init__(self, model: Any, qkv: Any) -> None:
            super().__init__()
            self.model = model
            self.qkv = qkv

        def forward(self, *tensors: Any) -> Any:
            inputs = dict(zip(PACKED_INPUTS, tensors, strict=True))
            return packed_hidden(self.model, inputs, qkv=self.qkv)

    texts = ["a short text", "and a somewhat longer text"]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings():
        # The TorchScript exporter is "legacy" but needs no onnxscript and handles
        # dynamic batch/sequence axes of HF encoders; tracer warnings are expected.
        warnings.simplefilter("ignore")
        if packable(loaded.model):
            if split:
                model, qkv = split_outliers(loaded.model, find_outliers(loaded))
            else:
                model, qkv = loaded.model, fused_qkv(loaded.model)
            packed = pack_inputs(loaded.tokenizer(texts), [0, 1])
            axes = {"gather": {0: "slots"}, "mask": {0: "texts", 3: "longest"}}
            for name in ("input_ids", "token_type_ids", "position_ids", "scatter", "hidden"):
                axes[name] = {0: "tokens"}
            _export(PackedHidden(model, qkv).eval(), packed, PACKED_INPUTS, axes, tmp)
        else:
            sample = loaded.tokenizer(texts, padding=True, return_tensors="pt")
            names = tuple(n for n in _INPUTS if n in sample)
            axes = {n: {0: "batch", 1: "seq"} for n in [*names, "hidden"]}
            _export(Hidden(loaded.model, names).eval(), sample, names, axes, tmp)
    os.replace(tmp, path)


def _linear(weight: Any, bias: Any = None) -> Any:
    """An ``nn.Linear`` holding copies of ``weight`` (out, in) and ``bias`` (zero if None).

    Always with a bias: a Linear without one exports as a MatMul over a renamed, transposed
    copy of its weight, which :func:`_split_float_nodes` could not find by name.
    """
    import torch

    linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias if bias is not None else torch.zeros(weight.shape[0]))
    return linear


def fused_qkv(model: Any) -> Any:
    """Per layer, one Linear computing the layer's query, key and value side by side."""
    import torch

    fused = torch.nn.ModuleList()
    for layer in model.encoder.layer:
        parts = [layer.attention.self.query, layer.attention.self.key, layer.attention.self.value]
        fused.append(
            _linear(torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts]))
        )
    return fused


@dataclass(frozen=True)
class Outliers:
    """One layer's channels of largest magnitude, which int8 computes in float32."""

    qkv_in: list[int]  # hidden dimensions of the attention's input
    ffn_in: list[int]  # hidden dimensions of the FFN's input
    inner: list[int]  # FFN channels after the activation (the output projection's input)


def find_outliers(
    loaded: LoadedModel, *, inner: int = INNER_OUTLIERS, inputs: int = INPUT_OUTLIERS
) -> list[Outliers]:
    """Per layer, the channels of largest magnitude over a few plain sentences.

    On MiniLM one hidden dimension reaches ~28 at every FFN input and ~10 at every attention
    input, where the median dimension peaks at ~1.5, and layers 0-3 each have one or two FFN
    channels reaching 14-24 against under ~6 for the rest. One dynamic int8 scale over a
    whole input spends its range on those few. Other sentences (generated ones, product
    reviews) picked the same largest channels.
    """
    import torch

    peaks: dict[tuple[str, int], Any] = {}

    def recorder(key: tuple[str, int], of_input: bool) -> Any:
        def record(_module: Any, args: Any, out: Any) -> None:
            peaks[key] = (args[0] if of_input else out).abs().amax(dim=0)  # (T, n) -> (n,)

        return record

    model = loaded.model
    hooks = []
    for i, layer in enumerate(model.encoder.layer):
        hooks += [
            layer.attention.self.query.register_forward_hook(recorder(("qkv_in", i), True)),
            layer.intermediate.dense.register_forward_hook(recorder(("ffn_in", i), True)),
            layer.intermediate.register_forward_hook(recorder(("inner", i), False)),
        ]
    try:
        encoded = loaded.tokenizer(list(_CALIBRATION), truncation=True)
        with torch.inference_mode():
            packed_hidden(model, pack_inputs(encoded, range(len(_CALIBRATION))))
    finally:
        for hook in hooks:
            hook.remove()

    def top(key: tuple[str, int], k: int) -> list[int]:
        peak = peaks[key]
        return sorted(peak.topk(min(k, peak.numel() // 4)).indices.tolist())

    return [
        Outliers(qkv_in=top(("qkv_in", i), inputs), ffn_in=top(("ffn_in", i), inputs),
                 inner=top(("inner", i), inner))
        for i in range(len(model.encoder.layer))
    ]  # fmt: skip


def split_outliers(model: Any, outliers: list[Outliers]) -> tuple[Any, Any]:
    """A copy of ``model`` and its fused Q/K/V Linears, computing the same function with
    every outlier channel in a small Linear of its own (named ``outlier*``).

    - Input dimensions (Q/K/V and FFN inputs): the big Linear gets its input with those
      dimensions zeroed, and an ``outlier_in`` Linear over just those dimensions adds
      their share.
    - FFN channels: the FFN is split in two (``outlier`` and ``bulk`` input and output
      Linears) and the output projection adds both parts.

    int8 then quantises the big Linears, whose scales the outliers no longer set, and keeps
    the small ``outlier*`` ones in float32.
    """
    import copy

    import torch

    class InputSplit(torch.nn.Module):
        def __init__(self, linear: Any, dims: list[int]) -> None:
            super().__init__()
            index = torch.tensor(dims)
            mask = torch.ones(linear.in_features)
            mask[index] = 0.0
            self.register_buffer("dims", index)
            self.register_buffer("mask", mask)
            self.bulk = _linear(linear.weight * mask, linear.bias)
            self.outlier_in = _linear(linear.weight[:, index])

        def forward(self, x: Any) -> Any:
            return self.bulk(x * self.mask) + self.outlier_in(x.index_select(1, self.dims))

    class SplitIntermediate(torch.nn.Module):
        def __init__(self, dense: Any, act: Any, found: Outliers, rest: Any) -> None:
            super().__init__()
            inner = torch.tensor(found.inner)
            self.outlier = _linear(dense.weight[inner], dense.bias[inner])
            self.bulk = InputSplit(_linear(dense.weight[rest], dense.bias[rest]), found.ffn_in)
            self.act = act

        def forward(self, x: Any) -> tuple[Any, Any]:
            return self.act(self.outlier(x)), self.act(self.bulk(x))

    class SplitOutput(torch.nn.Module):
        def __init__(self, dense: Any, inner: list[int], rest: Any) -> None:
            super().__init__()
            self.outlier = _linear(dense.weight[:, inner])
            self.bulk = _linear(dense.weight[:, rest], dense.bias)

        def forward(self, parts: tuple[Any, Any]) -> Any:
            return self.outlier(parts[0]) + self.bulk(parts[1])

    split = copy.deepcopy(model)
    qkv = fused_qkv(split)
    for i, (layer, found) in enumerate(zip(split.encoder.layer, outliers, strict=True)):
        qkv[i] = InputSplit(qkv[i], found.qkv_in)
        inner = set(found.inner)
        rest = torch.tensor(
            [c for c in range(layer.intermediate.dense.out_features) if c not in inner]
        )
        act = layer.intermediate.intermediate_act_fn
        layer.intermediate = SplitIntermediate(layer.intermediate.dense, act, found, rest)
        layer.output.dense = SplitOutput(layer.output.dense, found.inner, rest)
    return split, qkv


def _split_float_nodes(graph: Any, config: Any) -> list[str]:
    """Nodes of a :func:`split_outliers` export that int8 keeps in float32: the ``outlier*``
    Linears, found by weight name. A Gemm is listed under its own name and as
    ``<name>_MatMul``, which onnxruntime's quantizer names the MatMul it rewrites it to.
    """
    found: list[str] = []
    for node in graph.node:
        if (
            node.op_type in ("Gemm", "MatMul")
            and len(node.input) > 1
            and ".outlier" in node.input[1]
        ):
            found += [node.name, f"{node.name}_MatMul"]
    expected = 4 * config.num_hidden_layers  # Q/K/V input, FFN input, FFN channels in and out
    if len(found) != 2 * expected:  # an exporter that renames weights must not go unnoticed
        raise RuntimeError(f"found {len(found) // 2} float32 Linears to keep, expected {expected}")
    return found


def _outlier_projections(graph: Any, config: Any) -> list[str]:
    """Names of the nodes int8 keeps in float32 in a padded (not packed) export: each FFN's
    output projection (intermediate -> hidden) and the first FFN's input projection
    (hidden -> intermediate).

    Found by weight shape: that export's MatMuls take transposed copies of the weights under
    generated names. A ``Gemm`` is listed under its own name and as ``<name>_MatMul``, which
    onnxruntime's quantizer names the ``MatMul`` it rewrites it to.
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

    split_attention = False  # the packed graph takes one padded layout

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
