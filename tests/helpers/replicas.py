"""A model service with replica pools over tiny models, shared by the process and Ray actor
replica tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from open_autoglm.executors.model_service import ModelService
from open_autoglm.executors.workers.pool import WorkerPool
from open_autoglm.storage.hub import StorageHub

__all__ = ["pool_of", "replica_service"]


def pool_of(service: ModelService, name: str) -> WorkerPool:
    """The loaded pool of ``name`` (loading it first if needed)."""
    with service.lease(name) as model:
        assert isinstance(model, WorkerPool)
        return model


@contextlib.contextmanager
def replica_service(root: Path, dirs: dict[str, Path], **kwargs: Any) -> Iterator[ModelService]:
    """Models ``emb`` (service default replicas), ``emb-local`` (in-process) and ``cls`` (one
    replica), all loaded before it is yielded; closed with its storage after."""
    storage = StorageHub(f"sqlite:///{root / 'db.sqlite'}", root).open()
    svc = ModelService(storage, cache_dir=root / "models", budget_bytes=50_000_000, **kwargs)
    svc.register(name="emb", source=str(dirs["emb"]), task_types=["embedding"])
    svc.register(name="emb-local", source=str(dirs["emb"]), task_types=["embedding"],
                 options={"replicas": 0})  # fmt: skip
    svc.register(name="cls", source=str(dirs["cls"]), task_types=["text-classification"],
                 options={"replicas": 1})  # fmt: skip
    warm = [threading.Thread(target=pool_of, args=(svc, n)) for n in ("emb", "cls")]
    for t in warm:  # replicas import torch in parallel
        t.start()
    for t in warm:
        t.join()
    try:
        yield svc
    finally:
        svc.close()
        storage.close()
