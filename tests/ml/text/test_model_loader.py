from __future__ import annotations

from pathlib import Path

import pytest

from open_autoglm.errors import NotFoundError, ValidationError
from open_autoglm.ml.text.classification import Classifier
from open_autoglm.ml.text.embedding import Embedder
from open_autoglm.ml.text.generation import Generator
from open_autoglm.ml.text.loading import ModelRole, bundled_minilm_dir
from open_autoglm.ml.text.model_loader import TextModelLoader


def test_role_picks_the_wrapper(
    tiny_gpt2_dir: Path, tiny_embedder_dir: Path, tiny_classifier_dir: Path, tmp_path: Path
) -> None:
    loader = TextModelLoader(cache_dir=tmp_path)
    gen = loader({"source": str(tiny_gpt2_dir), "task_types": ["text-generation"]})
    emb = loader({"source": str(tiny_embedder_dir), "task_types": ["graph-train", "embedding"]})
    cls = loader({"path": str(tiny_classifier_dir), "task_types": ["text-classification"]})
    assert isinstance(gen, Generator) and gen.max_batch_size == 32
    assert isinstance(emb, Embedder) and isinstance(cls, Classifier)
    # The same directory can be loaded for another role explicitly.
    assert isinstance(loader.load({"source": str(tiny_embedder_dir)}, "embedding"), Embedder)
    half = loader(
        {"source": str(tiny_gpt2_dir), "task_types": ["text-generation"], "dtype": "bfloat16"}
    )
    assert half.memory_bytes < gen.memory_bytes
    assert loader.estimate_bytes({"source": str(tiny_gpt2_dir)}) > 0


def test_bundled_sources_resolve(tmp_path: Path) -> None:
    loader = TextModelLoader(cache_dir=tmp_path)
    assert loader.resolve_directory({"source": "bundled:all-minilm-l6-v2"}) == bundled_minilm_dir()
    with pytest.raises(NotFoundError):
        loader.resolve_directory({"source": "bundled:gpt-5"})


def test_bad_entries_are_rejected(tmp_path: Path) -> None:
    loader = TextModelLoader(cache_dir=tmp_path)
    with pytest.raises(ValidationError, match="no text task type"):
        TextModelLoader.role_of({"name": "g", "task_types": ["graph-train"]})
    with pytest.raises(ValidationError, match="no source"):
        loader({"name": "x", "task_types": ["embedding"]})
    with pytest.raises(ValidationError, match="backend"):
        loader({"source": str(tmp_path), "backend": "vllm", "task_types": ["embedding"]})
    with pytest.raises(NotFoundError):
        loader({"source": str(tmp_path / "nope"), "task_types": ["embedding"]})
    assert TextModelLoader.role_of({"task_types": ["text-generation"]}) is ModelRole.TEXT_GENERATION
