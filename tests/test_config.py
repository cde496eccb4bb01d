"""Settings precedence: explicit arguments > environment > TOML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from open_autoglm.config import load_settings
from open_autoglm.ml.text.model_loader import default_cache_dir


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "autoglm.toml"
    path.write_text(
        '[storage]\nurl = "sqlite:///from-file.db"\n[scheduler]\naging_s = 11.0\nmax_queued = 7\n'
    )
    return path


def test_the_file_beats_the_defaults(toml: Path) -> None:
    s = load_settings(toml)
    assert s.storage.url == "sqlite:///from-file.db" and s.scheduler.aging_s == 11.0


def test_the_environment_beats_the_file(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOGLM_SCHEDULER__AGING_S", "22")
    monkeypatch.setenv("AUTOGLM_STORAGE_URL", "sqlite:///from-env.db")  # the flat alias
    s = load_settings(toml)
    assert s.scheduler.aging_s == 22.0 and s.storage.url == "sqlite:///from-env.db"
    assert s.scheduler.max_queued == 7  # what the environment does not set, the file still does


def test_explicit_arguments_beat_the_environment(
    toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOGLM_SCHEDULER__AGING_S", "22")
    monkeypatch.setenv("AUTOGLM_STORAGE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("AUTOGLM_STORAGE__URL", "sqlite:///from-env-nested.db")
    s = load_settings(toml, storage={"url": "sqlite:///explicit.db"}, scheduler={"aging_s": 33})
    assert s.storage.url == "sqlite:///explicit.db" and s.scheduler.aging_s == 33.0
    assert s.scheduler.max_queued == 7


def test_the_config_file_can_come_from_the_environment(
    toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOGLM_CONFIG", str(toml))
    assert load_settings().scheduler.max_queued == 7


def test_every_variable_has_the_one_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOGLM_MODEL_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    src = Path(__file__).resolve().parents[1] / "src"
    stray = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if "OPEN_AUTOGLM_" in p.read_text(encoding="utf-8")
    ]
    assert not stray, f"variables outside the AUTOGLM_ prefix in {stray}"
