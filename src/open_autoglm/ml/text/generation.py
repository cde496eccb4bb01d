"""The :class:`Generator`: a causal LM with batched, continuous, streaming generation.

``generate`` runs a list of requests to completion in one :class:`DecodeBatch`, admitting
waiting requests as rows finish (continuous batching). ``stream`` yields text deltas for one
request. For concurrent callers on many threads, ``engine()`` returns a shared
:class:`~open_autoglm.ml.text.engine.GenerationEngine` that batches them together.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from open_autoglm.ml.text.decode_batch import DecodeBatch, GenerationRequest, GenerationResult
from open_autoglm.ml.text.loading import LoadedModel, ModelRole, load_model
from open_autoglm.ml.text.sampling import SamplingParams

if TYPE_CHECKING:
    from open_autoglm.ml.text.engine import GenerationEngine

__all__ = ["GenerationRequest", "GenerationResult", "Generator", "SamplingParams"]


class Generator:
    """Text generation with a causal LM (greedy or seeded sampling, stop strings, streaming)."""

    role = ModelRole.TEXT_GENERATION

    def __init__(self, loaded: LoadedModel, *, max_batch_size: int = 32) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.max_batch_size = max_batch_size
        self._engine: GenerationEngine | None = None
        self._engine_lock = threading.Lock()

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        dtype: str | None = None,
        max_batch_size: int = 32,
        linear: str = "auto",
    ) -> Generator:
        """Load ``path`` and wrap it, with oneDNN Linears unless ``linear="torch"``."""
        loaded = load_model(path, ModelRole.TEXT_GENERATION, dtype=dtype, linear=linear)
        return cls(loaded, max_batch_size=max_batch_size)

    @property
    def memory_bytes(self) -> int:
        return self.loaded.memory_bytes

    def new_batch(self) -> DecodeBatch:
        return DecodeBatch(self.model, self.tokenizer, max_batch_size=self.max_batch_size)

    def generate(
        self,
        requests: Sequence[GenerationRequest | str],
        params: SamplingParams | None = None,
    ) -> list[GenerationResult]:
        """Run ``requests`` to completion; results come back in request order.

        Plain strings become requests with ``params`` (default :class:`SamplingParams`).
        """
        default = params or SamplingParams()
        todo = deque(
            (
                i,
                r
                if isinstance(r, GenerationRequest)
                else GenerationRequest(prompt=r, params=default),
            )
            for i, r in enumerate(requests)
        )
        results: dict[int, GenerationResult] = {}
        index_of: dict[int, int] = {}
        batch = self.new_batch()
        while todo or batch.active:
            if todo and batch.free_slots:
                joining = [todo.popleft() for _ in range(min(batch.free_slots, len(todo)))]
                seq_ids = batch.add([r for _, r in joining])
                index_of.update(zip(seq_ids, (i for i, _ in joining), strict=True))
            else:
                batch.step()
            for seq_id, result in batch.pop_finished():
                results[index_of.pop(seq_id)] = result
        return [results[i] for i in range(len(requests))]

    def generate_one(self, prompt: str, params: SamplingParams | None = None) -> GenerationResult:
        return self.generate([prompt], params)[0]

    def stream(self, request: GenerationRequest | str) -> Iterator[str]:
        """Yield text deltas of one request as they are decoded (same text as ``generate``)."""
        pieces: list[str] = []
        if isinstance(request, str):
            request = GenerationRequest(prompt=request)
        user_callback = request.on_delta

        def collect(delta: str) -> None:
            pieces.append(delta)
            if user_callback is not None:
                user_callback(delta)

        batch = self.new_batch()
        batch.add([replace(request, on_delta=collect)])
        while True:
            yield from pieces
            pieces.clear()
            if not batch.active:
                break
            batch.step()
        batch.pop_finished()

    def engine(self) -> GenerationEngine:
        """The shared background engine that batches concurrent callers (started lazily)."""
        from open_autoglm.ml.text.engine import GenerationEngine

        with self._engine_lock:
            if self._engine is None:
                self._engine = GenerationEngine(self)
            return self._engine

    def close(self) -> None:
        with self._engine_lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
