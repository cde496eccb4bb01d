"""Frozen sentence embeddings for a table's text column, with missing texts masked.

The text encoder of the fusion models starts from a registered embedding model (MiniLM by
default) run once over the column; the vectors are cached by model and content
(:mod:`.embedding_cache`), so only the small trainable layers on top run per epoch. Rows with
no text get a zero vector and ``present = False``; fusion masks that modality instead of
feeding it an embedding of the empty string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from open_autoglm.ml.multimodal.embedding_cache import EmbeddingCache

__all__ = ["embed_texts"]

_CHUNK = 256  # texts per embed call: a progress step, and bounded memory for the tokenizer


def embed_texts(
    embedder: Any,
    texts: Sequence[str],
    *,
    cache: EmbeddingCache | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> tuple[Any, Any]:
    """Embed ``texts`` with ``embedder`` (an :class:`~open_autoglm.ml.text.embedding.Embedder`).

    Returns ``(vectors, present)``: float32 (rows, dim) and bool (rows,). Empty texts are not
    embedded; their rows are zero and not present.
    """
    import torch

    present = torch.tensor([bool(t.strip()) for t in texts], dtype=torch.bool)  # (rows,)
    keep = [t for t in texts if t.strip()]

    def run(batch: list[str]) -> Any:
        parts = []
        for start in range(0, len(batch), _CHUNK):
            if check_cancelled is not None:
                check_cancelled()
            parts.append(embedder.embed(batch[start : start + _CHUNK]))
            if on_progress is not None:
                on_progress(min(start + _CHUNK, len(batch)), len(batch))
        if not parts:
            return torch.zeros((0, embedder.dimension))
        return torch.cat(parts)  # (kept, dim)

    kept = cache.embed(keep, run) if cache is not None else run(keep)
    vectors = torch.zeros((len(texts), kept.shape[1] if kept.ndim == 2 else embedder.dimension))
    vectors[present] = kept
    return vectors, present
