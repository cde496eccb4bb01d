"""Write a fine-tuned classifier as a model directory the text-classification loader reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["save_classifier"]


def save_classifier(model: Any, base_dir: str, out_dir: Path, *, max_length: int) -> list[Path]:
    """Save the trained model (a transformers ``PreTrainedModel``; config with id2label/label2id) and the base model's tokenizer.

    The tokenizer keeps ``max_length`` as its ``model_max_length``, so serving truncates
    texts where training did. Returns the written files (safetensors, never pickle).
    """
    from transformers import AutoTokenizer

    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out_dir)
    return sorted(p for p in out_dir.rglob("*") if p.is_file())
