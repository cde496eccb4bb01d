from __future__ import annotations

from pathlib import Path

import pytest

from open_autoglm.errors import NotFoundError, ValidationError
from open_autoglm.ml.text.loading import (
    ModelRole,
    bundled_minilm_dir,
    bundled_smollm2_gguf,
    estimate_model_bytes,
    load_model,
    written_whole,
)


def test_loads_each_role_with_the_right_auto_class(
    tiny_gpt2_dir: Path, tiny_embedder_dir: Path, tiny_classifier_dir: Path
) -> None:
    gen = load_model(tiny_gpt2_dir, "text-generation")
    emb = load_model(tiny_embedder_dir, ModelRole.EMBEDDING)
    cls = load_model(tiny_classifier_dir, ModelRole.TEXT_CLASSIFICATION)
    assert type(gen.model).__name__ == "GPT2LMHeadModel"
    assert type(emb.model).__name__ == "BertModel"
    assert type(cls.model).__name__ == "BertForSequenceClassification"
    assert not gen.model.training
    assert gen.tokenizer("hello world")["input_ids"]


def test_memory_estimate_counts_parameters_once(tiny_gpt2_dir: Path) -> None:
    loaded = load_model(tiny_gpt2_dir, "text-generation")
    model = loaded.model
    # GPT-2 ties lm_head to the token embedding: a naive sum would count it twice.
    params = {p.data_ptr(): p.numel() * 4 for p in model.parameters()}
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert estimate_model_bytes(model) == sum(params.values()) + buffers
    assert loaded.memory_bytes == estimate_model_bytes(model)


def test_half_precision_halves_parameter_bytes(tiny_gpt2_dir: Path) -> None:
    full = load_model(tiny_gpt2_dir, "text-generation")
    half = load_model(tiny_gpt2_dir, "text-generation", dtype="bfloat16")
    full_params = sum(p.numel() * p.element_size() for p in full.model.parameters())
    half_params = sum(p.numel() * p.element_size() for p in half.model.parameters())
    assert half_params * 2 == full_params


def test_bad_inputs_raise_clear_errors(tmp_path: Path, tiny_gpt2_dir: Path) -> None:
    with pytest.raises(NotFoundError):
        load_model(tmp_path / "missing", "embedding")
    with pytest.raises(NotFoundError):
        load_model(tmp_path, "embedding")  # exists but no config.json
    with pytest.raises(ValidationError):
        load_model(tiny_gpt2_dir, "text-generation", dtype="int3")
    with pytest.raises(ValueError):
        load_model(tiny_gpt2_dir, "translation")


def test_bundled_models_are_found() -> None:
    assert (bundled_minilm_dir() / "model.safetensors").exists()
    assert bundled_smollm2_gguf().suffix == ".gguf"


def test_converted_smollm2_loads_from_safetensors(smollm2_dir: Path) -> None:
    assert list(smollm2_dir.glob("*.safetensors"))
    loaded = load_model(smollm2_dir, "text-generation")
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert 400e6 < loaded.memory_bytes < 700e6  # 135M params in float32
    assert loaded.tokenizer.chat_template


def test_a_directory_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "models" / "converted"
    with pytest.raises(RuntimeError), written_whole(out) as tmp:  # a conversion that dies
        assert tmp is not None
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed mid-write")
    assert not out.exists()  # nothing a later load could take for a finished model
    with written_whole(out) as tmp:
        assert tmp is not None
        (tmp / "config.json").write_text("{}")
        assert not out.exists()  # visible only once complete
    assert (out / "config.json").read_text() == "{}"
    with written_whole(out) as tmp:
        assert tmp is None  # done already: nothing to do
    # A half-written directory from before (config but no weights) is rebuilt, not trusted.
    (out / "model.safetensors").unlink(missing_ok=True)
    with written_whole(out, complete=lambda d: (d / "model.safetensors").exists()) as tmp:
        assert tmp is not None
        (tmp / "model.safetensors").write_bytes(b"x")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []
