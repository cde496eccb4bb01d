"""Tiny local models shared by the ml/text tests (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from open_autoglm.ml.text.tiny import build_tiny_gpt2

    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

    return build_tiny_bert_embedder(tmp_path_factory.mktemp("tiny-bert-emb"))


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from open_autoglm.ml.text.tiny import build_tiny_bert_classifier

    return build_tiny_bert_classifier(tmp_path_factory.mktemp("tiny-bert-cls"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2 converted to safetensors once, kept in the model cache dir across runs."""
    from open_autoglm.ml.text.model_loader import TextModelLoader

    loader = TextModelLoader()
    return loader.resolve_directory({"name": "smollm2", "source": "bundled:smollm2"})
