from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.texts import MIXED_TEXTS
from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.embedding import (
    Embedder,
    Pooling,
    packable,
    plan_attention,
    plan_buckets,
    plan_packs,
    read_pooling_config,
)
from open_autoglm.ml.text.loading import bundled_minilm_dir, load_model
from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

TEXTS = MIXED_TEXTS


def test_reads_sentence_transformers_pooling(tmp_path: Path) -> None:
    assert read_pooling_config(bundled_minilm_dir()) == (Pooling.MEAN, True)
    cls_dir = build_tiny_bert_embedder(tmp_path / "cls", pooling="cls")
    assert read_pooling_config(cls_dir) == (Pooling.CLS, True)
    assert read_pooling_config(tmp_path) == (Pooling.MEAN, True)  # no config: defaults


def test_plan_buckets_splits_mixed_lengths_and_keeps_equal_ones_together() -> None:
    # Equal lengths: one full pass; padding would buy nothing by splitting.
    assert plan_buckets([10] * 8, max_batch=32) == [list(range(8))]
    # Short and long texts: two passes, so the short ones are not padded to 60 tokens.
    lengths = [60, 5, 58, 6, 5, 61]
    chunks = plan_buckets(lengths, max_batch=32, overhead_tokens=20)
    assert chunks == [[1, 4, 3], [2, 0, 5]]
    # Every index exactly once, no pass larger than max_batch, shortest first.
    many = [(i * 37) % 50 + 1 for i in range(100)]
    chunks = plan_buckets(many, max_batch=16)
    assert sorted(i for c in chunks for i in c) == list(range(100))
    assert max(len(c) for c in chunks) <= 16
    maxima = [max(many[i] for i in c) for c in chunks]
    assert maxima == sorted(maxima)
    assert plan_buckets([], max_batch=4) == []


def test_plan_packs_caps_tokens_and_texts_and_groups_similar_lengths() -> None:
    lengths = [(i * 37) % 50 + 1 for i in range(100)]
    packs = plan_packs(lengths, max_tokens=64, max_texts=8)
    assert sorted(i for p in packs for i in p) == list(range(100))  # every text once
    assert max(len(p) for p in packs) <= 8
    assert all(sum(lengths[i] for i in p) <= 64 for p in packs if len(p) > 1)
    # Shortest first, so a pack's texts are neighbours in length.
    flat = [lengths[i] for p in packs for i in p]
    assert flat == sorted(flat)
    # A text over the cap is a pack of its own; equal short texts fill a pack to the cap.
    assert plan_packs([100, 3, 3], max_tokens=64, max_texts=8) == [[1, 2], [0]]
    assert plan_packs([16] * 8, max_tokens=64, max_texts=32) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert plan_packs([], max_tokens=64, max_texts=8) == []


def test_plan_packs_makes_as_few_packs_as_the_caps_allow_of_about_equal_size() -> None:
    # 10 texts of 27 tokens under a cap of 256: two packs of 5, not 9 and a pack of one
    # (which would cost nearly a full pack's fixed part for 27 tokens).
    assert [len(p) for p in plan_packs([27] * 10, max_tokens=256, max_texts=32)] == [5, 5]
    lengths = [(i * 37) % 50 + 1 for i in range(100)]  # 2,550 tokens
    packs = plan_packs(lengths, max_tokens=512, max_texts=64)
    sizes = [sum(lengths[i] for i in p) for p in packs]
    # Five packs of ~510 do not fit texts of up to 50 tokens under 512: six of ~425.
    assert len(packs) == 6 and max(sizes) <= 512 and max(sizes) - min(sizes) <= 50
    assert sorted(len(p) for p in plan_packs([3] * 10, max_tokens=512, max_texts=4)) == [3, 3, 4]


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_packed_forward_matches_the_padded_one(tiny_embedder_dir: Path, pooling: str) -> None:
    # Small packs: several per call, and the longest text alone in one.
    packed = Embedder.from_path(tiny_embedder_dir, pack_tokens=24)
    padded = Embedder.from_path(tiny_embedder_dir, pack=False)
    assert packed.packed and not padded.packed
    texts = TEXTS * 3
    for normalize in (True, False):
        got = packed.embed(texts, pooling=pooling, normalize=normalize)
        want = padded.embed(texts, pooling=pooling, normalize=normalize)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert packed.embed_with_usage(texts)[1] == padded.embed_with_usage(texts)[1]


def test_only_bert_encoders_are_packed(tiny_gpt2_dir: Path, tiny_embedder_dir: Path) -> None:
    assert packable(load_model(tiny_embedder_dir, "embedding").model)
    assert not packable(load_model(tiny_gpt2_dir, "text-generation").model)
    assert not packable(object())


def test_bucketing_keeps_order_and_values(tiny_embedder_dir: Path) -> None:
    emb = Embedder.from_path(tiny_embedder_dir, batch_size=2)
    bucketed = emb.embed(TEXTS)
    plain = emb.embed(TEXTS, bucket=False)
    one_by_one = torch.cat([emb.embed([t]) for t in TEXTS])
    assert bucketed.shape == (len(TEXTS), 64)
    torch.testing.assert_close(bucketed, one_by_one, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(bucketed, plain, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(bucketed.norm(dim=1), torch.ones(len(TEXTS)))


def test_pooling_override_and_no_normalize(tiny_embedder_dir: Path) -> None:
    emb = Embedder.from_path(tiny_embedder_dir)
    raw = emb.embed(TEXTS, normalize=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(len(TEXTS)))
    cls = emb.embed(TEXTS, pooling="cls", normalize=False)
    batch = emb.tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.inference_mode():
        first_token = emb.model(**batch).last_hidden_state[0, 0]
    torch.testing.assert_close(cls[0], first_token, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(emb.embed(TEXTS, pooling="max"), emb.embed(TEXTS))
    vectors, counts = emb.embed_with_usage(["hello world"])
    assert vectors.shape == (1, 64)
    assert counts == [len(emb.tokenizer("hello world")["input_ids"])]
    with pytest.raises(ValidationError):
        emb.embed("not a list")  # type: ignore[arg-type]


def test_minilm_matches_reference_mean_pooling() -> None:
    from transformers import AutoModel, AutoTokenizer

    path = bundled_minilm_dir()
    emb = Embedder.from_path(path, batch_size=2)
    ours = emb.embed(TEXTS)
    # The sentence-transformers recipe written out directly: mean over real tokens, L2 norm.
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    batch = tok(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    cosine = torch.nn.functional.cosine_similarity(ours, ref, dim=1)
    assert ours.shape == (len(TEXTS), 384)
    assert bool((cosine > 0.999).all()), cosine
    # Sanity: related sentences are closer than unrelated ones.
    a, b, c = emb.embed(["a cat sits on a mat", "the cat sat on the mat", "stock prices fell"])
    assert float(a @ b) > float(a @ c)


def test_plan_attention_groups_texts_of_similar_length() -> None:
    # Equal lengths: one group, padding would buy nothing by splitting.
    assert plan_attention([20] * 6) == [list(range(6))]
    # Short and long texts: two groups, so the short ones are not padded to 120 tokens.
    assert plan_attention([120, 4, 118, 5, 4]) == [[1, 4, 3], [2, 0]]
    # A group costs a kernel call: a near-equal neighbour joins instead of starting one.
    assert plan_attention([30, 31], group_cost=500) == [[0, 1]]
    assert plan_attention([30, 31], group_cost=0) == [[0], [1]]
    lengths = [(i * 37) % 90 + 3 for i in range(40)]
    groups = plan_attention(lengths)
    assert sorted(i for g in groups for i in g) == list(range(40))
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(flat) and 1 < len(groups) < 40
    assert plan_attention([]) == []


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_attention_groups_match_the_padded_forward(tiny_embedder_dir: Path, pooling: str) -> None:
    from open_autoglm.ml.text.embedding import pack_inputs

    # One pack of very different lengths, so attention runs in several groups.
    texts = ["hi", "a b", " ".join(["word"] * 60), "tiny", " ".join(["graph"] * 45)]
    packed = Embedder.from_path(tiny_embedder_dir, pack_tokens=4096)
    padded = Embedder.from_path(tiny_embedder_dir, pack=False)
    encoded = packed.tokenizer(texts)
    masks = pack_inputs(encoded, range(len(texts)), split_attention=True)["mask"]
    assert isinstance(masks, tuple) and len(masks) >= 2
    assert sum(m.shape[0] for m in masks) == len(texts)
    got = packed.embed(texts, pooling=pooling)
    torch.testing.assert_close(got, padded.embed(texts, pooling=pooling), atol=1e-5, rtol=1e-4)
    packed.split_attention = False  # one padded layout: the same vectors
    torch.testing.assert_close(got, packed.embed(texts, pooling=pooling), atol=1e-5, rtol=1e-4)
