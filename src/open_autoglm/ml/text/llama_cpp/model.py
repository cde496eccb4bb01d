"""A GGUF causal LM served by llama.cpp: one model, one context, many sequences.

:class:`LlamaCppModel` is the wrapper the model cache holds for a GGUF model, with the same
surface as the transformers :class:`~open_autoglm.ml.text.generation.Generator` (``role``,
``memory_bytes``, ``engine()``, ``generate``, ``close``), so the scheduler, the task handlers
and the OpenAI routes serve both alike. The weights stay quantised; the context holds
``parallel`` sequences, each with its own KV cache of ``n_ctx`` tokens, decoded together by
:class:`~open_autoglm.ml.text.llama_cpp.decode_batch.LlamaDecodeBatch`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from open_autoglm.errors import NotFoundError, ValidationError
from open_autoglm.ml.text.chat_template import ChatTemplate, plain_transcript
from open_autoglm.ml.text.decode_batch import GenerationRequest, GenerationResult
from open_autoglm.ml.text.llama_cpp.gguf_header import gguf_metadata
from open_autoglm.ml.text.loading import ModelRole
from open_autoglm.ml.text.sampling import SamplingParams

if TYPE_CHECKING:
    from open_autoglm.ml.text.engine import GenerationEngine
    from open_autoglm.ml.text.llama_cpp.decode_batch import LlamaDecodeBatch

__all__ = [
    "LlamaCppModel",
    "LlamaCppOptions",
    "default_threads",
    "estimate_gguf_bytes",
    "kv_cache_bytes",
    "warm_llama_cpp_in_background",
]

log = logging.getLogger(__name__)

_KV_BYTES_PER_VALUE = 2  # f16 keys and values, llama.cpp's default cache type


@dataclass(frozen=True)
class LlamaCppOptions:
    """How a GGUF model is served (registry ``options``).

    Args:
        n_threads: CPU threads for decoding (from the executor's allotment).
        n_ctx: context of each sequence (prompt + generated tokens), in tokens.
        parallel: sequences decoded at once (continuous batching width).
        n_batch: most tokens fed to one decode call; longer prefills continue next step.
    """

    n_threads: int = 1
    n_ctx: int = 2048
    parallel: int = 8
    n_batch: int = 512

    def __post_init__(self) -> None:
        for name, low in (("n_threads", 1), ("n_ctx", 16), ("parallel", 1), ("n_batch", 1)):
            if int(getattr(self, name)) < low:
                raise ValidationError(
                    f"options.{name} must be >= {low}",
                    details=[{"loc": ["options", name], "msg": f"must be >= {low}"}],
                )

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, n_threads: int) -> LlamaCppOptions:
        known = {"n_threads", "n_ctx", "parallel", "n_batch"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValidationError(
                f"unknown llama.cpp options {unknown}; known: {sorted(known)}",
                details=[{"loc": ["options", k], "msg": "unknown option"} for k in unknown],
            )
        values = {k: int(v) for k, v in options.items()}
        values.setdefault("n_threads", n_threads)
        return cls(**values)


def kv_cache_bytes(n_layer: int, n_head_kv: int, head_dim: int, tokens: int) -> int:
    """Bytes of a KV cache: keys and values per layer, per KV head, per token."""
    return 2 * n_layer * n_head_kv * head_dim * tokens * _KV_BYTES_PER_VALUE


def _quiet_llama_logs() -> None:
    # llama-cpp-python prints llama.cpp's log to stderr unless its logger says otherwise.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


@functools.cache
def warm_llama_cpp_in_background() -> threading.Thread:
    """Import llama-cpp-python in a daemon thread, once per process; the thread."""
    thread = threading.Thread(target=_warm_llama_cpp, name="autoglm-llama-import", daemon=True)
    thread.start()
    return thread


def _warm_llama_cpp() -> None:
    start = time.perf_counter()
    try:
        import llama_cpp

        _quiet_llama_logs()
        llama_cpp.llama_backend_init()
    except Exception:  # the load itself reports a broken install
        log.warning("could not import llama-cpp-python ahead of a load", exc_info=True)
        return
    log.info("llama.cpp ready in %.2f s", time.perf_counter() - start)


class LlamaCppModel:
    """A loaded GGUF model and its multi-sequence context."""

    role = ModelRole.TEXT_GENERATION

    def __init__(self, path: str | Path, options: LlamaCppOptions | None = None) -> None:
        start = time.perf_counter()
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        self.path = Path(path)
        if not self.path.is_file():
            raise NotFoundError(f"GGUF file not found: {self.path}")
        self.options = options or LlamaCppOptions()
        _quiet_llama_logs()
        llama_cpp.llama_backend_init()
        lap = time.perf_counter()
        log.info("%s: llama.cpp imported in %.2f s", self.path.name, lap - start)
        mparams = llama_cpp.llama_model_default_params()
        mparams.use_mmap = True
        self._model: Any = LlamaModel(path_model=str(self.path), params=mparams, verbose=False)
        now = time.perf_counter()
        log.info("%s: weights mapped, vocabulary read in %.2f s", self.path.name, now - lap)
        lap = now
        self.vocab = self._model.vocab
        n_train = self._model.n_ctx_train()
        self.n_ctx = min(self.options.n_ctx, n_train) if n_train > 0 else self.options.n_ctx
        self.max_batch_size = self.options.parallel

        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx * self.options.parallel
        cparams.n_batch = self.options.n_batch
        cparams.n_ubatch = self.options.n_batch
        cparams.n_seq_max = self.options.parallel
        cparams.n_threads = self.options.n_threads
        cparams.n_threads_batch = self.options.n_threads
        # A KV stream of n_ctx cells per sequence: attention reads what it would read
        # alone (one shared buffer changes the reduction lengths). llama.cpp runs one
        # forward pass per run of consecutive sequence ids, so the slot table hands out
        # the lowest free ids (see slots.py).
        cparams.kv_unified = False
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self._model.model, cparams)
        if ctx is None:
            raise ValidationError(f"llama.cpp could not create a context for {self.path.name}")
        self.ctx = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        log.info(
            "%s: context of %d sequences x %d tokens made in %.2f s",
            self.path.name,
            self.options.parallel,
            self.n_ctx,
            time.perf_counter() - lap,
        )
        self.n_vocab = self._model.n_vocab()
        meta = self._model.metadata()
        self.template: ChatTemplate | None = None
        if source := meta.get("tokenizer.chat_template"):
            self.template = ChatTemplate(
                source,
                bos_token=self._piece_text(self._model.token_bos()),
                eos_token=self._piece_text(self._model.token_eos()),
            )
        self.add_bos = bool(self._model.add_bos_token())
        n_head = llama_cpp.llama_model_n_head(self._model.model)
        self._kv_bytes = kv_cache_bytes(
            llama_cpp.llama_model_n_layer(self._model.model),
            llama_cpp.llama_model_n_head_kv(self._model.model),
            llama_cpp.llama_model_n_embd(self._model.model) // max(1, n_head),
            self.n_ctx * self.options.parallel,
        )
        self._weights_bytes = int(llama_cpp.llama_model_size(self._model.model))
        self._engine: GenerationEngine | None = None
        self._engine_lock = threading.Lock()
        self._closed = False

    # -- tokens ------------------------------------------------------------------------------

    def _piece_text(self, token: int) -> str:
        if token < 0:
            return ""
        return str(
            self._model.token_to_piece(token, special=True)
            .rstrip(b"\0")
            .decode("utf-8", errors="replace")
        )

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        return list(self._model.tokenize(text.encode("utf-8"), add_bos, special))

    def piece(self, token: int) -> bytes:
        """The bytes one generated token stands for (special tokens render as nothing)."""
        import ctypes

        import llama_cpp

        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        return bytes(buf.raw[:n])

    def is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def prompt_text(self, request: GenerationRequest) -> tuple[str, bool]:
        """The prompt text of a request and whether it is a rendered chat (special tokens)."""
        if request.messages is not None:
            messages: Sequence[Mapping[str, Any]] | None = request.messages
        elif request.chat or (request.chat is None and self.template is not None):
            messages = [{"role": "user", "content": request.prompt}]
        else:
            messages = None
        if messages is None:
            return request.prompt, False
        if self.template is None:
            return plain_transcript(messages), False
        return self.template.render(messages, tools=request.tools), True

    def encode(self, request: GenerationRequest) -> list[int]:
        text, chat = self.prompt_text(request)
        ids = self.tokenize(text, add_bos=self.add_bos, special=chat)
        if not ids:
            bos = self._model.token_bos()
            if bos < 0:
                raise ValidationError("prompt is empty and the model has no BOS token")
            ids = [bos]
        return ids

    # -- serving -----------------------------------------------------------------------------

    @property
    def memory_bytes(self) -> int:
        """Weights plus the KV cache of every sequence (allocated when the context is made)."""
        return self._weights_bytes + self._kv_bytes

    def new_batch(self) -> LlamaDecodeBatch:
        """A fresh decode batch over this context (clears every sequence's KV cache)."""
        from open_autoglm.ml.text.llama_cpp.decode_batch import LlamaDecodeBatch

        return LlamaDecodeBatch(self)

    def engine(self) -> GenerationEngine:
        """The engine that decodes every request of this model together (started lazily)."""
        from open_autoglm.ml.text.engine import GenerationEngine

        with self._engine_lock:
            if self._engine is None:
                self._engine = GenerationEngine(self)  # type: ignore[arg-type]
            return self._engine

    def generate(
        self,
        requests: Sequence[GenerationRequest | str],
        params: SamplingParams | None = None,
    ) -> list[GenerationResult]:
        """Run ``requests`` through the engine; results in request order."""
        engine = self.engine()
        default = params or SamplingParams()
        futures = [
            engine.submit(
                r if isinstance(r, GenerationRequest) else GenerationRequest(r, params=default)
            )
            for r in requests
        ]
        return [f.result() for f in futures]

    def close(self) -> None:
        import llama_cpp

        with self._engine_lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
            if self._closed:
                return
            self._closed = True
        llama_cpp.llama_free(self.ctx)
        self._model.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


def default_threads(allotment: float | None) -> int:
    """Decode threads for an executor allotment of ``allotment`` CPUs (never above the host's)."""
    host = os.cpu_count() or 1
    return max(1, min(host, int(allotment or host)))


def estimate_gguf_bytes(path: str | Path, options: LlamaCppOptions) -> int:
    """Bytes a GGUF model will take once loaded (weights + KV cache), before loading it.

    Reads the hyperparameters from the file's header (``gguf_header``): no ``llama_cpp``
    import, no vocabulary parse, so sizing a model costs milliseconds.
    """
    path = Path(path)
    weights = path.stat().st_size
    try:
        meta = gguf_metadata(path)
    except ValueError:
        return weights  # unreadable here; the load itself reports why
    arch = meta.get("general.architecture", "")

    def value(key: str, default: int = 0) -> int:
        try:
            return int(meta.get(f"{arch}.{key}", default))
        except (TypeError, ValueError):
            return default

    n_layer, n_embd, n_head = (
        value("block_count"),
        value("embedding_length"),
        value("attention.head_count"),
    )
    if not (n_layer and n_embd and n_head):
        return weights
    n_train = value("context_length")
    tokens = (min(options.n_ctx, n_train) if n_train > 0 else options.n_ctx) * options.parallel
    kv = kv_cache_bytes(n_layer, value("attention.head_count_kv", n_head), n_embd // n_head, tokens)
    return weights + kv
