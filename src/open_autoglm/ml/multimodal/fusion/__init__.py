"""Fusion strategies: one module per strategy, named after it, registered in one place.

A strategy is a :class:`~open_autoglm.ml.multimodal.fusion.base.FusionModel` subclass in a
module of this package whose name is the strategy's name (``early.py`` -> ``"early"``),
decorated with :func:`register`. Adding a strategy is adding one such file: the names are
discovered from the package without importing torch, so request validation can list them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from open_autoglm.ml.multimodal.fusion.base import FusionModel

__all__ = ["register", "strategy_class", "strategy_names"]

_NOT_STRATEGIES = frozenset({"base"})
_REGISTRY: dict[str, type[FusionModel]] = {}
M = TypeVar("M", bound="type[FusionModel]")


def strategy_names() -> list[str]:
    """Every strategy in the package, in a stable order (module names; torch not imported)."""
    here = [str(Path(__file__).parent)]
    return sorted(m.name for m in pkgutil.iter_modules(here) if m.name not in _NOT_STRATEGIES)


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make a FusionModel subclass the strategy ``name``."""

    def wrap(cls: M) -> M:
        cls.strategy = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def strategy_class(name: str) -> type[FusionModel]:
    """The model class of strategy ``name`` (imports its module on first use)."""
    if name not in strategy_names():
        raise KeyError(f"unknown fusion strategy {name!r}; known: {strategy_names()}")
    if name not in _REGISTRY:
        importlib.import_module(f"{__name__}.{name}")
    return _REGISTRY[name]
