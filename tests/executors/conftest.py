"""Fixtures shared by the replica tests (process and Ray actor replicas)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random-init BERT embedder and classifier, saved as real model directories."""
    import torch

    from open_autoglm.ml.text.tiny import build_tiny_bert_classifier, build_tiny_bert_embedder

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("replica-models")
    return {
        "emb": build_tiny_bert_embedder(root / "emb"),
        "cls": build_tiny_bert_classifier(root / "cls"),
    }
