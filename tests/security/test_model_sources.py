"""Model sources: only files under the model roots, never pickle, no existence oracle, and a
failed load that is a cached 4xx rather than a spawn storm."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
import pytest
from fastapi.testclient import TestClient

from open_autoglm.errors import ValidationError
from open_autoglm.executors.model_service import ModelService
from open_autoglm.executors.model_sources import ModelRoots
from open_autoglm.storage.hub import StorageHub


def _entry(source: Any, name: str = "m") -> dict[str, Any]:
    return {"name": name, "source": source, "task_types": ["embedding"]}


def test_paths_outside_the_roots_get_one_answer(api: TestClient, tmp_path: Path) -> None:
    """Existing or not, file or directory, direct or through .. : the same 422, no path."""
    answers = set()
    for source in ("/etc/shadow", "/etc", "/root", "../../etc/passwd", "/no/such/dir", "~"):
        r = api.post("/v1/models/registry", json=_entry(source))
        assert r.status_code == 422, (source, r.text)
        assert r.json()["error"]["details"][0]["loc"] == ["source"]
        answers.add(r.text)
    assert len(answers) == 1
    assert api.get("/v1/models/registry").json()["models"] == []


def test_symlink_and_dotdot_escapes_from_a_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "inside").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    roots = ModelRoots([root])
    assert roots.check(str(root / "inside")) == (root / "inside").resolve()
    for source in (root / "escape", root / "inside" / ".." / ".." / "elsewhere"):
        with pytest.raises(ValidationError, match="under a configured model root"):
            roots.check(str(source))


def test_pickle_weights_are_refused_at_registration(api: TestClient) -> None:
    data_dir = Path(api.app.state.runtime.settings.data_dir)  # type: ignore[attr-defined]
    pickled = data_dir / "pickled"
    pickled.mkdir(parents=True, exist_ok=True)
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    for source in (str(pickled), str(pickled / "pytorch_model.bin")):
        r = api.post("/v1/models/registry", json=_entry(source))
        assert r.status_code == 422 and "pickle" in r.text, r.text
    files = {"config.json": "0" * 64, "pytorch_model.bin": "1" * 64}
    r = api.post("/v1/models/registry", json=_entry({"artifacts": files}))
    assert r.status_code == 422 and "pickle" in r.text, r.text


def _broken_model(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "bert"}')
    (directory / "model.safetensors").write_bytes(b"not safetensors")
    return directory


def test_a_failed_load_is_a_4xx_that_leaves_no_replicas(tmp_path: Path) -> None:
    """Weights a replica could not read: a 422 with the reason, found before any replica
    process is started for them."""
    storage = StorageHub(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path).open()
    service = ModelService(
        storage,
        cache_dir=tmp_path / "models",
        budget_bytes=50_000_000,
        replicas=1,
        roots=ModelRoots([tmp_path]),
    )
    me = psutil.Process(os.getpid())
    before = {p.pid for p in me.children(recursive=True)}
    try:
        service.register(**_entry(str(_broken_model(tmp_path / "broken"))))
        with (
            pytest.raises(ValidationError, match="not a safetensors file") as first,
            service.lease("m"),
        ):
            pass
        assert first.value.details[0]["loc"] == ["source"]
        assert {p.pid for p in me.children(recursive=True)} == before
        # Asked again: the same error from memory, no second replica started.
        with pytest.raises(ValidationError) as again, service.lease("m"):
            pass
        assert again.value is first.value
    finally:
        service.close()
        storage.close()


def test_a_failed_load_is_remembered_for_its_ttl(tmp_path: Path) -> None:
    storage = StorageHub(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path).open()
    clock, loads = [0.0], []

    def loader(entry: dict[str, Any]) -> Any:
        loads.append(entry["name"])
        raise OSError("unreadable weights")

    service = ModelService(
        storage,
        cache_dir=tmp_path / "models",
        budget_bytes=50_000_000,
        loader=loader,
        roots=ModelRoots([tmp_path]),
        failure_ttl_s=30,
        clock=lambda: clock[0],
    )
    try:
        service.register(**_entry(str(tmp_path / "m")))
        for _ in range(5):  # a client retrying in a loop starts one load
            with pytest.raises(ValidationError, match="OSError: unreadable"), service.lease("m"):
                pass
        assert loads == ["m"]
        clock[0] = 31.0
        with pytest.raises(ValidationError), service.lease("m"):
            pass
        assert loads == ["m", "m"]
        service.register(**_entry(str(tmp_path / "m")), replace=True)  # a new entry: no memory
        with pytest.raises(ValidationError), service.lease("m"):
            pass
        assert len(loads) == 3
    finally:
        service.close()
        storage.close()
