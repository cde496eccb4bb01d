"""Text embeddings cached by model and content, so a second run over the same texts is free.

Embedding a table's text column is the slow part of multimodal training (a MiniLM forward per
review) while the vectors depend only on the encoder and the texts. The cache key is a hash of
the encoder's fingerprint (its weight and config files, pooling, length limit) and of the
texts in order; the value is a safetensors file holding one float32 matrix (rows, dim).
Where the bytes live is a :class:`CacheStore`: a directory (benchmarks, notebooks) or the
platform's artifact store behind a key index (task handlers, ``tasks/multimodal.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "CacheStore",
    "DirectoryStore",
    "EmbeddingCache",
    "IndexedArtifactStore",
    "content_hash",
    "model_fingerprint",
]

_FORMAT = "open-autoglm/text-embeddings/1"


def content_hash(texts: Sequence[str]) -> str:
    """SHA-256 of the texts in order (lengths prefixed, so no separator can collide)."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def model_fingerprint(directory: Path, *, pooling: str, max_length: int) -> str:
    """Identity of an encoder: its config and weight files (name and size) and how it pools."""
    h = hashlib.sha256(f"{pooling}\n{max_length}\n".encode())
    for name in ("config.json", "tokenizer.json", "vocab.txt"):
        path = directory / name
        if path.exists():
            h.update(name.encode() + b"\0" + path.read_bytes())
    for path in sorted(directory.glob("*.safetensors")):
        h.update(f"{path.name}\0{path.stat().st_size}\n".encode())
    return h.hexdigest()[:32]


class CacheStore(Protocol):
    """Where cached embedding files live, looked up by key."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key``; returns where it went (a path or an artifact id)."""


class DirectoryStore:
    """One file per key in a directory; written atomically (temp file, then rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.exists() else None

    def put(self, key: str, data: bytes) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return str(path)


class IndexedArtifactStore:
    """Bytes in the (content-addressed) artifact store; a small JSON index maps key -> id.

    The artifact store names content by its hash, which is unknown until the vectors exist;
    the index is what lets a later run find them from the key alone.
    """

    def __init__(
        self,
        index_dir: str | Path,
        save: Callable[[bytes], dict[str, Any]],
        load: Callable[[str], bytes],
    ) -> None:
        self.index_dir = Path(index_dir)
        self._save, self._load = save, load

    def get(self, key: str) -> bytes | None:
        entry = self.index_dir / f"{key}.json"
        if not entry.exists():
            return None
        try:
            return self._load(json.loads(entry.read_text())["artifact"])
        except Exception:  # the artifact was purged: a miss, re-embedded and re-indexed
            return None

    def put(self, key: str, data: bytes) -> str:
        artifact = self._save(data)["id"]
        self.index_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.index_dir / f"{key}.tmp"
        tmp.write_text(json.dumps({"artifact": artifact}))
        tmp.replace(self.index_dir / f"{key}.json")
        return str(artifact)


class EmbeddingCache:
    """Embed texts through ``embed`` unless the same model already embedded the same texts."""

    def __init__(self, store: CacheStore, fingerprint: str) -> None:
        self.store = store
        self.fingerprint = fingerprint
        self.hits = 0
        self.misses = 0
        self.last_location = ""

    def key(self, texts: Sequence[str]) -> str:
        return hashlib.sha256(f"{self.fingerprint}\n{content_hash(texts)}".encode()).hexdigest()

    def embed(self, texts: Sequence[str], embed: Callable[[list[str]], Any]) -> Any:
        """Float32 tensor (len(texts), dim): from the store, or ``embed(texts)`` then stored."""
        from safetensors.torch import load, save

        key = self.key(texts)
        cached = self.store.get(key)
        if cached is not None:
            tensors = load(cached)
            if tensors["embeddings"].shape[0] == len(texts):
                self.hits += 1
                return tensors["embeddings"]
        self.misses += 1
        vectors = embed(list(texts)).float().contiguous()  # (rows, dim)
        data = save(
            {"embeddings": vectors}, metadata={"format": _FORMAT, "model": self.fingerprint}
        )
        self.last_location = self.store.put(key, data)
        return vectors
