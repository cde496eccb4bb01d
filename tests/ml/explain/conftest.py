"""Tiny models for the explainer tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

    return build_tiny_bert_embedder(tmp_path_factory.mktemp("tiny-bert-emb"))
