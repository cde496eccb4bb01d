from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from open_autoglm.errors import ConflictError, NotFoundError, ValidationError
from open_autoglm.executors.model_service import DEFAULT_BATCH_POLICY, ModelService
from open_autoglm.executors.model_sources import ModelRoots
from open_autoglm.storage.hub import StorageHub


@pytest.fixture(scope="module")
def embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

    torch.set_num_threads(1)
    return build_tiny_bert_embedder(tmp_path_factory.mktemp("svc-emb"), pooling="cls")


@pytest.fixture
def service(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelService]:
    storage = StorageHub(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path).open()
    # The tiny models are built in the session's temporary directories: a model root here.
    roots = ModelRoots([tmp_path_factory.getbasetemp()])
    svc = ModelService(storage, cache_dir=tmp_path / "models", budget_bytes=50_000_000, roots=roots)
    try:
        yield svc
    finally:
        svc.close()
        storage.close()


def test_graph_tasks_get_back_what_they_registered(service: ModelService) -> None:
    weights = service.storage.put_artifact(b"w", media_type="application/octet-stream")["id"]
    config = {"meta_artifact": "m" * 64, "model_config": {"kind": "gcn", "layers": [2, 3]}}
    service.register(
        name="g1",
        backend="graph",
        source={"artifact": weights},
        task_types=["graph-predict"],
        config=config,
    )
    record = service.get("g1")
    assert record["config"] == config and record["backend"] == "graph"
    with pytest.raises(ConflictError):
        service.register(name="g1", backend="graph", source={"artifact": weights}, task_types=["x"])
    with pytest.raises(ValidationError, match="only 'hf' models load"), service.lease("g1"):
        pass
    # A fresh service over the same storage (a restart) reads the same entry.
    again = ModelService(service.storage, cache_dir=service.cache_dir, budget_bytes=1)
    again.refresh()
    assert again.get("g1")["config"] == config


def test_batch_policy_comes_from_the_entry(service: ModelService, embedder_dir: Path) -> None:
    assert service.batch_policy("embedding", "emb") == DEFAULT_BATCH_POLICY
    service.register(
        name="emb",
        source=str(embedder_dir),
        task_types=["embedding"],
        max_batch_size=7,
        max_wait_ms=25,
    )
    assert service.batch_policy("embedding", "emb") == (7, 0.025)
    # No max_wait_ms: a replica pool merges waiting requests itself, so nothing is held back;
    # a model in the server process keeps the default hold. A restart reads the same.
    service.register(name="emb-r", source=str(embedder_dir), task_types=["embedding"],
                     options={"replicas": 2})  # fmt: skip
    service.register(name="emb-0", source=str(embedder_dir), task_types=["embedding"],
                     options={"replicas": 0})  # fmt: skip
    again = ModelService(service.storage, cache_dir=service.cache_dir, budget_bytes=1)
    again.refresh()
    for svc in (service, again):
        assert svc.batch_policy("embedding", "emb-r") == (32, 0.0)
        assert svc.batch_policy("embedding", "emb-0") == DEFAULT_BATCH_POLICY
    service.delete("emb")
    assert service.batch_policy("embedding", "emb") == DEFAULT_BATCH_POLICY
    with pytest.raises(NotFoundError):
        service.get("emb")


def _embed(service: ModelService, name: str) -> np.ndarray:
    with service.lease(name) as model:
        return np.asarray(model.embed(["graph nodes learn", "a short one"]))


def test_artifact_sources_load_the_same_model(service: ModelService, embedder_dir: Path) -> None:
    service.register(name="dir", source=str(embedder_dir), task_types=["embedding"])
    files = service.store_directory(embedder_dir)
    assert "1_Pooling/config.json" in files  # the pooling config travels too
    service.register(name="files", source={"artifacts": files}, task_types=["embedding"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(embedder_dir, arcname="tiny-model")
    archive = service.storage.put_artifact(buf.getvalue(), media_type="application/gzip")["id"]
    service.register(name="tar", source={"artifact": archive}, task_types=["embedding"])

    expected = _embed(service, "dir")
    for name in ("files", "tar"):
        np.testing.assert_allclose(_embed(service, name), expected, atol=1e-6)
    # Materialised once: a second service reuses the directory instead of rebuilding it.
    spec = service.spec("files")
    built = service.materialise(spec)
    assert (built / "1_Pooling" / "config.json").exists()
    assert service.materialise(spec) == built
    stats = service.stats()
    assert set(stats["models"]) == {"dir", "files", "tar"} and stats["misses"] == 3


def test_bad_archive_and_missing_artifact(service: ModelService) -> None:
    junk = service.storage.put_artifact(b"not an archive", media_type="text/plain")["id"]
    service.register(name="junk", source={"artifact": junk}, task_types=["embedding"])
    with pytest.raises(ValidationError, match="neither a tar nor a zip"), service.lease("junk"):
        pass
    service.register(
        name="gone", source={"artifacts": {"config.json": "0" * 64}}, task_types=["embedding"]
    )
    with pytest.raises(NotFoundError), service.lease("gone"):
        pass
    assert service.stats()["load_failures"] == 2


def test_replacing_an_entry_unloads_the_old_weights(
    service: ModelService, embedder_dir: Path, tmp_path: Path
) -> None:
    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

    other = build_tiny_bert_embedder(tmp_path / "other", seed=3)
    service.register(name="m", source=str(embedder_dir), task_types=["embedding"])
    first = _embed(service, "m")
    service.register(name="m", source=str(other), task_types=["embedding"], replace=True)
    assert not np.allclose(_embed(service, "m"), first)


def test_a_private_model_is_hidden_from_other_readers_even_in_the_cache_figures(
    service: ModelService, embedder_dir: Path
) -> None:
    service.register(name="mine", source=str(embedder_dir), task_types=["embedding"],
                     private_to="alice")  # fmt: skip
    service.register(name="ours", source=str(embedder_dir), task_types=["embedding"])
    _embed(service, "mine")
    _embed(service, "ours")
    assert {m["name"] for m in service.list(reader="bob")} == {"ours"}
    assert {m["name"] for m in service.list(reader="alice")} == {"mine", "ours"}
    assert {m["name"] for m in service.list()} == {"mine", "ours"}  # an admin
    assert set(service.stats(reader="bob")["models"]) == {"ours"}
    assert set(service.stats(reader="alice")["models"]) == {"mine", "ours"}
    assert not service.visible("mine", "bob") and service.visible("mine", None)
    with pytest.raises(NotFoundError):
        service.get_for("mine", "bob")
    assert service.get_for("mine", "alice")["private_to"] == "alice"
