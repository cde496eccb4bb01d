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
    assert list((tmp_path / "onnx").glob("*-packed-int8-keepffn2.onnx"))
    assert onnx_embedder.graph_packed  # a BERT encoder is exported packed


def test_onnx_packed_graph_matches_torch_and_keeps_ffn_outputs_float(
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
    # int8: every Linear is MatMulInteger but the FFN output projections (one per layer) and
    # the first FFN input projection.
    int8 = export_encoder_onnx(loaded, tmp_path, int8=True)
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert ops.count("MatMulInteger") == 5 * layers - 1, ops
    everything = export_encoder_onnx(loaded, tmp_path, int8=True, keep_ffn_fp32=False)
    assert [n.op_type for n in onnx.load(str(everything)).graph.node].count(
        "MatMulInteger"
    ) == 6 * layers


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
