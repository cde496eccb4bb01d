"""Settings validation and the runtime's process-level tuning."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from pydantic import ValidationError

from open_autoglm.config import load_settings
from open_autoglm.runtime import Runtime


def test_unknown_executor_backend_is_rejected_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOGLM_EXECUTOR__BACKEND", "slurm")
    with pytest.raises(ValidationError) as info:
        load_settings(data_dir=tmp_path)
    (err,) = info.value.errors()
    assert err["loc"] == ("executor", "backend")
    assert "'local'" in err["msg"] and "'ray'" in err["msg"]
    monkeypatch.setenv("AUTOGLM_EXECUTOR__BACKEND", "ray")
    assert load_settings(data_dir=tmp_path).executor.backend == "ray"
    monkeypatch.delenv("AUTOGLM_EXECUTOR__BACKEND")
    toml = tmp_path / "autoglm.toml"
    toml.write_text('[executor]\nbackend = "kubernetes"\n')
    with pytest.raises(ValidationError, match=r"executor\.backend"):
        load_settings(toml, data_dir=tmp_path)
    assert load_settings(data_dir=tmp_path).executor.backend == "local"


def test_runtime_tunes_the_collector_while_it_runs_and_restores_it(tmp_path: Path) -> None:
    before = gc.get_threshold()
    first = Runtime(load_settings(data_dir=tmp_path / "a", scheduler={"gc_threshold": 12_345}))
    second = Runtime(load_settings(data_dir=tmp_path / "b", scheduler={"gc_threshold": 12_345}))
    with first:
        assert gc.get_threshold()[0] == 12_345
        assert gc.get_freeze_count() > 0
        with second:
            assert first.run({"task_type": "echo", "input": 1}, timeout=10)["result"] == 1
        assert gc.get_threshold()[0] == 12_345  # still tuned: the first runtime runs on
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    with Runtime(load_settings(data_dir=tmp_path / "c", scheduler={"gc_threshold": 0})):
        assert gc.get_threshold() == before  # 0 leaves the collector alone
