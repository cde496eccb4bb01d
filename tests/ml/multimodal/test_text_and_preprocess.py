"""Text embeddings cached by model and content, rows without text masked, and preprocessing
state that survives a JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from open_autoglm.ml.multimodal.embedding_cache import (
    DirectoryStore,
    EmbeddingCache,
    IndexedArtifactStore,
    content_hash,
    model_fingerprint,
)
from open_autoglm.ml.multimodal.metrics import classification_metrics, roc_auc
from open_autoglm.ml.multimodal.preprocess import Preprocessor
from open_autoglm.ml.multimodal.text_embedding import embed_texts
from open_autoglm.spec.table import TableSchema, validate_table


class CountingEmbedder:
    """A deterministic stand-in for a sentence model that counts the texts it embeds."""

    dimension = 3

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: list[str]) -> torch.Tensor:
        self.calls += len(texts)
        return torch.tensor([[len(t), t.count("a"), 1.0] for t in texts])


def test_second_run_over_the_same_texts_does_not_embed(tmp_path: Path) -> None:
    embedder = CountingEmbedder()
    cache = EmbeddingCache(DirectoryStore(tmp_path), fingerprint="m1")
    texts = ["a cat", "", "banana"]
    first, present = embed_texts(embedder, texts, cache=cache)
    assert present.tolist() == [True, False, True]
    assert first[1].abs().sum() == 0 and embedder.calls == 2  # the empty text is not embedded
    again, _ = embed_texts(embedder, texts, cache=EmbeddingCache(DirectoryStore(tmp_path), "m1"))
    assert embedder.calls == 2 and torch.equal(first, again)
    embed_texts(embedder, texts, cache=EmbeddingCache(DirectoryStore(tmp_path), "m2"))
    assert embedder.calls == 4  # another model is another key
    embed_texts(embedder, ["banana", "a cat"], cache=EmbeddingCache(DirectoryStore(tmp_path), "m1"))
    assert embedder.calls == 6  # so is another order
    assert content_hash(["ab", "c"]) != content_hash(["a", "bc"])


def test_artifact_store_finds_vectors_by_key_and_survives_a_purge(tmp_path: Path) -> None:
    artifacts: dict[str, bytes] = {}

    def save(data: bytes) -> dict[str, str]:
        artifacts[str(len(artifacts))] = data
        return {"id": str(len(artifacts) - 1)}

    store = IndexedArtifactStore(tmp_path / "index", save=save, load=artifacts.__getitem__)
    embedder = CountingEmbedder()
    embed_texts(embedder, ["x", "y"], cache=EmbeddingCache(store, "m"))
    embed_texts(embedder, ["x", "y"], cache=EmbeddingCache(store, "m"))
    assert embedder.calls == 2 and len(artifacts) == 1
    artifacts.clear()  # the artifact was purged: a miss, not a crash
    embed_texts(embedder, ["x", "y"], cache=EmbeddingCache(store, "m"))
    assert embedder.calls == 4


def test_fingerprint_follows_the_model_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": 4}')
    (tmp_path / "model.safetensors").write_bytes(b"0" * 10)
    one = model_fingerprint(tmp_path, pooling="mean", max_length=128)
    assert one == model_fingerprint(tmp_path, pooling="mean", max_length=128)
    assert one != model_fingerprint(tmp_path, pooling="cls", max_length=128)
    (tmp_path / "model.safetensors").write_bytes(b"0" * 11)
    assert one != model_fingerprint(tmp_path, pooling="mean", max_length=128)


SCHEMA = TableSchema.model_validate(
    {
        "categorical": ["size"],
        "numeric": ["age"],
        "label": "y",
        "missing": {"numeric": "median"},
    }
)


def test_preprocessing_state_is_json_and_encodes_new_rows_alike() -> None:
    train = validate_table(
        {"size": ["S", "M", "M", None], "age": [20, 30, None, 40], "y": ["no", "yes", "no", "yes"]},
        SCHEMA,
    )
    pre = Preprocessor.fit(train, min_count=2)
    assert pre.vocabularies == {"size": ["M"]}  # S is rarer than min_count: unknown
    assert pre.scalers["age"]["fill"] == 30.0  # the median
    restored = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    new = validate_table(
        {"size": ["M", "XL", None], "age": [30, None, 50]}, SCHEMA, require_label=False
    )
    a, b = pre.transform(new), restored.transform(new)
    assert a.categorical[:, 0].tolist() == [1, 0, 0]  # unseen and missing: index 0
    assert torch.equal(a.numeric, b.numeric) and a.numeric[1, 0] == 0.0  # median 30 = mean
    assert a.tab_present.tolist() == [True, True, True] and a.labels is None
    assert pre.transform(train).labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="not a fusion preprocessing state"):
        Preprocessor.from_dict({"format": "other"})


def test_metrics() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 1, 1], [0.5, 0.5, 0.9]) == 0.75  # ties count half
    m = classification_metrics([0, 1, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert m["accuracy"] == 0.75
    assert m["positive_f1"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["weighted_f1"] == pytest.approx((2 / 3 + 3 * 0.8) / 4)
