"""Packed Linears (oneDNN, MKL): same outputs as torch's own layers, oneDNN's rows independent
of their batch mates, opt-out, clear errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.classification import Classifier
from open_autoglm.ml.text.embedding import Embedder
from open_autoglm.ml.text.linear import (
    MklLinear,
    OneDNNLinear,
    PackedLinear,
    form_available,
    linear_form,
    row_bucket,
    swap_linears,
)
from open_autoglm.ml.text.loading import ModelRole, load_model
from open_autoglm.ml.text.model_loader import TextModelLoader
from open_autoglm.spec.model import ModelSpec

TEXTS = ["the cat sat on the mat", "hello", "a longer sentence about graphs and messages " * 3]


def test_both_packed_forms_are_usable_on_this_build() -> None:
    assert form_available("onednn") == (True, "ok")
    assert form_available("mkl") == (True, "ok")


def _kinds(model: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("form", [OneDNNLinear, MklLinear])
def test_packed_linear_matches_f_linear_for_any_row_count(form: type[PackedLinear]) -> None:
    torch.manual_seed(0)
    plain = torch.nn.Linear(384, 1536)
    fast = form(plain)
    assert fast.weight is plain.weight and fast.bias is plain.bias  # parameters are shared
    with torch.inference_mode():
        for shape in [(1, 384), (7, 384), (3, 29, 384), (600, 384), (0, 384)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-4)
        no_bias = torch.nn.Linear(384, 96, bias=False)
        x = torch.randn(2, 11, 384)
        torch.testing.assert_close(form(no_bias)(x), no_bias(x), rtol=1e-4, atol=1e-4)
    twin = copy.deepcopy(fast)  # the packed copy is repacked, not copied
    assert twin.weight is not fast.weight and type(twin) is form
    with torch.inference_mode():
        x = torch.randn(5, 384)
        torch.testing.assert_close(twin(x), plain(x), rtol=1e-4, atol=1e-4)


def test_mkl_linear_is_torch_linear_bit_for_bit_from_16_rows() -> None:
    # Same sgemm, the weight packed once instead of per call: from 16 rows MKL runs the same
    # kernel either way. Below, torch's path takes gemv or a small-matrix kernel.
    torch.manual_seed(1)
    plain = torch.nn.Linear(384, 1536)
    fast = MklLinear(plain)
    with torch.inference_mode():
        for m in (16, 17, 33, 100, 257):
            x = torch.randn(m, 384) * 3
            assert torch.equal(fast(x), plain(x)), m


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k,n", [(576, 576), (576, 1536), (1536, 576), (576, 49152), (384, 384)])
def test_each_row_comes_out_the_same_whatever_its_batch(k: int, n: int, threads: int) -> None:
    # What lets generation batch requests and still match each one run alone, bit for bit:
    # SmolLM2's and MiniLM's weight shapes, 1 to 300 rows. torch's path differs from 2 rows.
    torch.manual_seed(k + n)
    fast = OneDNNLinear(torch.nn.Linear(k, n))
    x = torch.randn(300, k) * 3
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            alone = torch.cat([fast(x[i : i + 1]) for i in range(300)])
            for m in (2, 7, 17, 40, 77, 130, 300):
                assert torch.equal(fast(x[:m]), alone[:m]), m
                assert torch.equal(fast(x[:m].unsqueeze(0))[0], alone[:m]), m  # 3-D input
    finally:
        torch.set_num_threads(before)


def test_row_counts_are_bucketed_into_few_shapes() -> None:
    # oneDNN keeps a compiled kernel (and its scratch memory) per input shape: the rows a
    # served encoder sees must map to a bounded set, each only a little larger.
    buckets = {row_bucket(m) for m in range(1, 8193)}
    assert len(buckets) <= 140
    for m in range(1, 20000):
        assert m <= row_bucket(m) <= max(m + 7, m * 9 // 8)


def test_embedder_and_classifier_agree_with_torch_linears(
    tiny_embedder_dir: Path, tiny_classifier_dir: Path
) -> None:
    slow = Embedder.from_path(tiny_embedder_dir, linear="torch")
    assert _kinds(slow.model) == {"Linear"} and slow.linear == "torch"
    for form, kind in (("onednn", "OneDNNLinear"), ("mkl", "MklLinear")):
        fast = Embedder.from_path(tiny_embedder_dir, linear=form)
        assert _kinds(fast.model) == {kind} and fast.linear == form
        cosine = torch.nn.functional.cosine_similarity(fast.embed(TEXTS), slow.embed(TEXTS))
        assert bool((cosine > 0.99999).all()), (form, cosine)
        # The packed copies count against the memory budget.
        assert fast.memory_bytes > slow.memory_bytes
    got = Classifier.from_path(tiny_classifier_dir).probabilities(TEXTS)
    want = Classifier.from_path(tiny_classifier_dir, linear="torch").probabilities(TEXTS)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_the_loader_option_and_its_errors(tiny_embedder_dir: Path, tiny_gpt2_dir: Path) -> None:
    loader = TextModelLoader()
    entry = {"source": str(tiny_embedder_dir), "task_types": ["embedding"]}
    # The default for an embedding model: whichever form its forward ran faster in here.
    default = loader(entry)
    kinds = {"onednn": "OneDNNLinear", "mkl": "MklLinear", "torch": "Linear"}
    assert _kinds(default.model) == {kinds[default.linear]}
    assert _kinds(loader({**entry, "options": {"linear": "onednn"}}).model) == {"OneDNNLinear"}
    assert _kinds(loader({**entry, "options": {"linear": "mkl"}}).model) == {"MklLinear"}
    assert _kinds(loader({**entry, "options": {"linear": "torch"}}).model) == {"Linear"}
    # int8-attention: attention Linears are int8, the FFN's float ones go to oneDNN.
    options = {"quantize": "int8-attention", "linear": "onednn"}
    mixed = loader({**entry, "options": options}).model
    assert "OneDNNLinear" in _kinds(mixed) and "Linear" not in _kinds(mixed)
    gen = loader({"source": str(tiny_gpt2_dir), "task_types": ["text-generation"]})
    assert "OneDNNLinear" in _kinds(gen.model)  # GPT-2's lm_head (its blocks use Conv1D)
    gen = loader({"source": str(tiny_gpt2_dir), "task_types": ["text-generation"],
                  "options": {"linear": "torch"}})  # fmt: skip
    assert "OneDNNLinear" not in _kinds(gen.model)
    with pytest.raises(ValidationError, match=r"options\.linear must be one of"):
        loader({**entry, "options": {"linear": "blas"}})
    with pytest.raises(ValidationError, match="not to ONNX"):
        loader({**entry, "options": {"runtime": "onnx", "linear": "onednn"}})
    base = {"name": "m", "source": "/x", "task_types": ["embedding"]}
    with pytest.raises(ValueError, match=r"options\.linear must be auto, onednn, mkl or torch"):
        ModelSpec.model_validate({**base, "options": {"linear": "fast"}})
    with pytest.raises(ValueError, match="torch runtime"):
        ModelSpec.model_validate({**base, "options": {"linear": "onednn", "runtime": "onnx"}})


def test_only_float32_cpu_linears_are_swapped(tiny_embedder_dir: Path) -> None:
    loaded = load_model(tiny_embedder_dir, ModelRole.EMBEDDING, dtype="bfloat16")
    assert swap_linears(loaded.model) == 0 and _kinds(loaded.model) == {"Linear"}
    loaded = load_model(tiny_embedder_dir, ModelRole.EMBEDDING)
    n = sum(1 for m in loaded.model.modules() if type(m) is torch.nn.Linear)
    assert swap_linears(loaded.model, "mkl") == n > 0 and linear_form(loaded.model) == "mkl"
    assert swap_linears(loaded.model) == 0  # already swapped: nothing left to do
