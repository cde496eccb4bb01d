from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.embedding import Embedder
from open_autoglm.ml.text.loading import ModelRole, load_model
from open_autoglm.ml.text.model_loader import TextModelLoader
from open_autoglm.ml.text.quantize import attention_only, quantize_loaded


def test_int8_embeddings_stay_close_and_weights_shrink(tiny_embedder_dir: Path) -> None:
    loaded = load_model(tiny_embedder_dir, ModelRole.EMBEDDING)
    texts = ["the cat sat on the mat", "hello world", "one two three four five"]
    base = Embedder(loaded).embed(texts)
    for include in (None, attention_only):
        quantized = quantize_loaded(loaded, include=include)
        linear_left = [n for n, m in quantized.model.named_modules() if type(m) is torch.nn.Linear]
        if include is None:
            assert linear_left == []
        else:
            assert linear_left and all(".attention." not in f".{n}." for n in linear_left)
        vectors = Embedder(quantized).embed(texts)
        cosine = torch.nn.functional.cosine_similarity(base, vectors, dim=1)
        assert bool((cosine > 0.95).all()), cosine
        assert not torch.equal(base, vectors)  # it really ran in int8
    assert quantize_loaded(loaded).memory_bytes < loaded.memory_bytes


def test_loader_option_selects_quantization(tiny_embedder_dir: Path) -> None:
    loader = TextModelLoader()
    entry = {"source": str(tiny_embedder_dir), "task_types": ["embedding"]}
    plain = loader(entry)
    int8 = loader({**entry, "options": {"quantize": "int8", "batch_size": 4}})
    assert int8.batch_size == 4 and int8.memory_bytes < plain.memory_bytes
    with pytest.raises(ValidationError):
        loader({**entry, "options": {"quantize": "int4"}})


def test_onnx_int8_embedder_matches_torch(tiny_embedder_dir: Path, tmp_path: Path) -> None:
    import onnxruntime  # noqa: F401 - the ml extra installs it; missing must fail, not skip

    loader = TextModelLoader(cache_dir=tmp_path)
    entry = {"source": str(tiny_embedder_dir), "task_types": ["embedding"]}
    torch_embedder = loader(entry)
    onnx_embedder = loader({**entry, "options": {"quantize": "onnx-int8"}})
    texts = ["the cat sat on the mat", "hello world", "one two three four five six seven"]
    base = torch_embedder.embed(texts)
    vectors, counts = onnx_embedder.embed_with_usage(texts)
    assert vectors.shape == base.shape and onnx_embedder.model is None
    cosine = torch.nn.functional.cosine_similarity(base, vectors, dim=1)
    assert bool((cosine > 0.95).all()), cosine
    assert not torch.equal(base, vectors)
    assert counts == torch_embedder.embed_with_usage(texts)[1]
    assert 0 < onnx_embedder.memory_bytes
    assert list((tmp_path / "onnx").glob("*-packed-qkv-int8-outliers*.onnx"))
    assert onnx_embedder.graph_packed  # a BERT encoder is exported packed


def _linears(graph: Any) -> tuple[int, int]:
    """(int8, float32) Linears of an exported graph: float ones read a named weight."""
    weights = {init.name for init in graph.initializer}
    int8 = sum(n.op_type == "MatMulInteger" for n in graph.node)
    fp32 = sum(
        n.op_type in ("Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in weights
        for n in graph.node
    )
    return int8, fp32


def test_onnx_packed_graph_matches_torch_and_keeps_outliers_float(
    tiny_embedder_dir: Path, tmp_path: Path
) -> None:
    import onnx

    from open_autoglm.ml.text.embedding import Embedder
    from open_autoglm.ml.text.loading import load_model
    from open_autoglm.ml.text.onnx_embedding import OnnxEmbedder, export_encoder_onnx

    loaded = load_model(tiny_embedder_dir, "embedding")
    layers = loaded.model.config.num_hidden_layers
    fp32 = OnnxEmbedder(loaded, export_encoder_onnx(loaded, tmp_path, int8=False))
    texts = ["the cat sat on the mat", "hello", "one two three four five six seven eight"] * 4
    want = Embedder(loaded, pack=False).embed(texts)
    assert fp32.graph_packed
    torch.testing.assert_close(fp32.embed(texts), want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fp32.embed(texts, bucket=False), want, atol=1e-5, rtol=1e-4)
    # Per layer: fused Q/K/V, attention output, FFN input and output.
    assert _linears(onnx.load(str(fp32.onnx_path)).graph) == (0, 4 * layers)
    # int8: those four in int8, and per layer four small outlier Linears in float32.
    int8 = export_encoder_onnx(loaded, tmp_path, int8=True)
    assert _linears(onnx.load(str(int8)).graph) == (4 * layers, 4 * layers)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "fp32" in p.name]
    everything = export_encoder_onnx(loaded, tmp_path, int8=True, outliers_fp32=False)
    assert _linears(onnx.load(str(everything)).graph) == (4 * layers, 0)


def _plant_outliers(model: Any) -> None:
    """Give a tiny random BERT the outliers trained ones have: one hidden dimension large at
    every attention and FFN input (through the LayerNorms' scales) and one FFN channel large
    in layer 0.

    Query and key stay as initialised: scaled up, they make attention nearly argmax, so any
    rounding (int8 or not) flips which token a head attends to and the test measures that
    instability instead of the outlier split.
    """
    with torch.no_grad():
        for name, param in model.encoder.named_parameters():
            if name.endswith(("dense.weight", "value.weight")):
                param *= 5.0  # random init's std 0.02 leaves the residual carrying everything
        model.embeddings.LayerNorm.weight[5] *= 40.0
        for layer in model.encoder.layer:
            layer.attention.output.LayerNorm.weight[7] *= 40.0
        for layer in model.encoder.layer[:-1]:  # not the last: pooling would see it alone
            layer.output.LayerNorm.weight[5] *= 40.0
        dense = model.encoder.layer[0].intermediate.dense
        dense.weight[11] *= 30.0
        dense.bias[11] = 30.0


def test_outliers_are_found_and_the_split_model_is_the_same_function(
    tiny_embedder_dir: Path,
) -> None:
    from open_autoglm.ml.text.embedding import pack_inputs, packed_hidden
    from open_autoglm.ml.text.loading import load_model
    from open_autoglm.ml.text.onnx_embedding import find_outliers, fused_qkv, split_outliers

    loaded = load_model(tiny_embedder_dir, "embedding")
    _plant_outliers(loaded.model)
    found = find_outliers(loaded)
    assert len(found) == loaded.model.config.num_hidden_layers
    assert 5 in found[0].qkv_in and all(7 in f.ffn_in for f in found)
    assert all(5 in f.qkv_in for f in found[1:]) and 11 in found[0].inner
    texts = ["the cat sat on the mat", "hello", "one two three four five six seven eight"]
    inputs = pack_inputs(loaded.tokenizer(texts), [0, 1, 2])
    with torch.inference_mode():
        want = packed_hidden(loaded.model, inputs)
        fused = packed_hidden(loaded.model, inputs, qkv=fused_qkv(loaded.model))
        split, qkv = split_outliers(loaded.model, found)
        got = packed_hidden(split, inputs, qkv=qkv)
    torch.testing.assert_close(fused, want, atol=1e-5, rtol=1e-4)
    # Same function, different float32 summation order: the planted channels carry values
    # ~40x the rest, so rounding scales with the output's size. A fixed atol of 1e-4 failed
    # once in CI at 1.55e-4 (two of 1344 values; ten local builds read 1e-5 to 4e-5); a
    # dropped outlier channel moves outputs on the scale of the channel itself.
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(got, want, atol=1e-4 * scale, rtol=1e-4)


def test_int8_with_outliers_in_float_stays_close_where_plain_int8_drifts(
    tiny_embedder_dir: Path, tmp_path: Path
) -> None:
    from open_autoglm.ml.text.embedding import Pooling, pack_inputs, packed_hidden, pool_packed
    from open_autoglm.ml.text.loading import load_model
    from open_autoglm.ml.text.onnx_embedding import OnnxEmbedder, export_encoder_onnx

    loaded = load_model(tiny_embedder_dir, "embedding")
    _plant_outliers(loaded.model)
    # Fixed token ids rather than tokenised text, so the inputs do not depend on the corpus.
    generator = torch.Generator().manual_seed(0)
    vocab = loaded.model.config.vocab_size
    ids = [torch.randint(vocab, (n,), generator=generator).tolist() for n in (3, 7, 12, 20, 31) * 3]
    inputs = pack_inputs({"input_ids": ids}, range(len(ids)))
    with torch.inference_mode():
        want = pool_packed(packed_hidden(loaded.model, inputs), inputs, Pooling.MEAN)

    def worst(**kwargs: Any) -> float:
        path = export_encoder_onnx(loaded, tmp_path, int8=True, **kwargs)
        hidden = OnnxEmbedder(loaded, path)._packed_hidden_states(inputs)
        got = pool_packed(hidden, inputs, Pooling.MEAN)
        return float(torch.nn.functional.cosine_similarity(want, got, dim=1).min())

    split, plain = worst(), worst(outliers_fp32=False)
    assert split > 0.98 and 1 - plain > 10 * (1 - split), (split, plain)


def _export_in_child(model_dir: str, out_dirs: list[str], barrier: Any, results: Any) -> None:
    from open_autoglm.ml.text.loading import load_model
    from open_autoglm.ml.text.onnx_embedding import export_encoder_onnx

    loaded = load_model(model_dir, "embedding")
    for out_dir in out_dirs:
        barrier.wait()  # both processes start each export together
        try:
            results.put(str(export_encoder_onnx(loaded, Path(out_dir), int8=True)))
        except Exception as exc:  # reported to the test, which fails on it
            results.put(f"error: {exc!r}")


def test_replicas_exporting_the_same_model_at_once_both_succeed(
    tiny_embedder_dir: Path, tmp_path: Path
) -> None:
    # Every replica process of a new int8 model exports it on first load, at the same moment.
    # onnxruntime's quantizer writes a scratch "-inferred.onnx" beside its input and deletes
    # it: without a lock one replica removed the other's and the first request failed.
    import multiprocessing

    import onnxruntime

    ctx = multiprocessing.get_context("spawn")
    outs = [str(tmp_path / f"onnx{i}") for i in range(3)]  # three fresh caches: three races
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_export_in_child, args=(str(tiny_embedder_dir), outs, barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    try:
        for out in outs:
            got = [results.get(timeout=120) for _ in procs]
            assert got[0] == got[1] and not got[0].startswith("error"), got
            assert Path(got[0]).parent == Path(out)
            onnxruntime.InferenceSession(got[0], providers=["CPUExecutionProvider"])
            assert not list(Path(out).glob("*-inferred.onnx"))
            assert not list(Path(out).glob(".*.tmp"))
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
