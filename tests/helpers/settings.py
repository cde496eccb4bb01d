"""Settings for tests: a temp data dir, entry-point plugins, optional plugin dirs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from open_autoglm.config import Settings, load_settings

__all__ = ["make_settings"]


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings on ``data_dir``; tiny models built in temp dirs are under a model root."""
    base: dict[str, object] = {"data_dir": data_dir}
    base.update(overrides)
    models = dict(base.get("models") or {})  # type: ignore[call-overload]
    models.setdefault("roots", [tempfile.gettempdir()])
    base["models"] = models
    return load_settings(**base)
