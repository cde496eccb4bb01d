"""Settings for tests: a temp data dir, entry-point plugins, optional plugin dirs."""

from __future__ import annotations

from pathlib import Path

from open_autoglm.config import Settings, load_settings

__all__ = ["make_settings"]


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {"data_dir": data_dir}
    base.update(overrides)
    return load_settings(**base)
