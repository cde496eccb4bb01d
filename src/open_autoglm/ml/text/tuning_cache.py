"""Keep what :mod:`open_autoglm.ml.text.tuning` measured on disk, so a model is measured once.

Measuring an embedding model's Linear form and pack cap takes seconds per replica at one
thread, and every replica of every start would otherwise measure the same thing again. The
answer depends only on the model's weights and shapes, this machine's CPU, the torch build and
the thread count, so it is kept under a key made of those, as one JSON file in the loader's
cache directory (``<cache_dir>/tuning``, inside the data dir by default). A file lock beside
it lets one process measure while the others wait and then read its answer: two replicas of a
pool starting side by side measure once, and neither disturbs the other's timings.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["TuningCache", "TuningSource"]

log = logging.getLogger(__name__)

# Bump when what the measurement picks, or how, changes: old answers are then measured anew.
_FORMAT = 1


class TuningSource(enum.StrEnum):
    """Where a loaded embedder's tuning came from (reported in a replica's hello)."""

    MEASURED = "measured"
    CACHED = "cached"
    FIXED = "fixed"  # nothing left at "auto": nothing to measure


def _cpu() -> str:
    """The CPU model and its flags (what decides which kernels are fastest)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags", "cache size")
    lines = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}
    return "|".join(lines.get(k, "") for k in wanted)


def _files(path: Path) -> list[tuple[str, int, int]]:
    """Name, size and mtime of the model's weight and config files (its identity here)."""
    files = [*sorted(path.glob("*.safetensors")), path / "config.json"]
    out = []
    for f in files:
        if f.is_file():
            st = f.stat()
            out.append((f.name, st.st_size, st.st_mtime_ns))
    return out


class TuningCache:
    """Tuning answers of embedders, one JSON file per (model, machine, runtime) key.

    Args:
        directory: where the answers live (created on first store).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def key(self, embedder: Any, *, linear: bool, pack_tokens: bool) -> str:
        """What the answer depends on, hashed: the model's files, its runtime class and
        options, the CPU, torch and its thread count."""
        import torch

        facts = {
            "format": _FORMAT,
            "path": str(Path(embedder.loaded.path).resolve()),
            "files": _files(Path(embedder.loaded.path)),
            "runtime": type(embedder).__name__,
            "graph": str(getattr(embedder, "onnx_path", "") or ""),  # float or int8 ONNX
            "packed": bool(embedder.packed),
            "split_attention": bool(embedder.split_attention),
            "linear_form": str(embedder.linear),
            "measure": [linear, pack_tokens],
            "max_length": int(embedder.max_length),
            "batch_size": int(embedder.batch_size),
            "cpu": _cpu(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        blob = json.dumps(facts, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def tune(self, embedder: Any, *, linear: bool, pack_tokens: bool) -> TuningSource:
        """Give ``embedder`` the answer kept for it, or measure it (:meth:`Embedder.tune`)
        and keep that; returns which happened."""
        if not (linear or pack_tokens):
            return TuningSource.FIXED
        from filelock import FileLock

        key = self.key(embedder, linear=linear, pack_tokens=pack_tokens)
        path = self.directory / f"{key}.json"
        self.directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.directory / f".{key}.lock")):
            answer = self._read(path)
            if answer is not None and self._apply(embedder, answer, linear, pack_tokens):
                return TuningSource.CACHED
            embedder.tune(linear=linear, pack_tokens=pack_tokens)
            self._write(path, embedder)
        return TuningSource.MEASURED

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            answer = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return answer if isinstance(answer, dict) else None

    @staticmethod
    def _apply(embedder: Any, answer: dict[str, Any], linear: bool, pack_tokens: bool) -> bool:
        """Put a kept answer in ``embedder``; False when it does not fit (then measure)."""
        form, pack = answer.get("linear"), answer.get("pack_tokens")
        if linear:
            if not isinstance(form, str):
                return False
            if form != embedder.linear:
                from open_autoglm.ml.text.linear import LinearChoice

                choice = LinearChoice(embedder.model)
                if form not in choice.forms:
                    return False
                choice.use(form)
            embedder.linear_timings = answer.get("linear_timings")
        if pack_tokens:
            if not isinstance(pack, int) or isinstance(pack, bool) or pack < 1:
                return False
            embedder.pack_tokens = pack
            embedder.pack_timings = answer.get("pack_timings")
        return True

    @staticmethod
    def _write(path: Path, embedder: Any) -> None:
        answer = {
            "linear": str(embedder.linear),
            "pack_tokens": int(embedder.pack_tokens),
            "linear_timings": getattr(embedder, "linear_timings", None),
            "pack_timings": getattr(embedder, "pack_timings", None),
        }
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(answer, sort_keys=True))
            os.replace(tmp, path)
        except OSError as exc:  # a read-only cache: serving works, the next start measures
            log.warning("could not keep the tuning of %s: %s", embedder.loaded.path, exc)
