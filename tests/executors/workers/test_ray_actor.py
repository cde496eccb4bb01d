"""Model replicas as Ray actors: same vectors as in-process, crash isolation, eviction.

Real Ray (the session's local instance from the ``ray_cluster`` fixture), real actors loading
tiny random-init BERT models; nothing is mocked. Starting an actor imports torch and
transformers in a fresh worker, so the module shares one service, and the tests run in order:
the last one closes it.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.replicas import pool_of, replica_service
from open_autoglm.config import ExecutorSettings
from open_autoglm.errors import AutoGLMError, TaskFailedError
from open_autoglm.executors import ray_cluster as rc
from open_autoglm.executors.model_service import ModelService
from open_autoglm.executors.workers.base import WorkerLauncher
from open_autoglm.executors.workers.pool import WorkerPool
from open_autoglm.executors.workers.process import ProcessLauncher
from open_autoglm.executors.workers.ray_actor import RayLauncher
from open_autoglm.storage.replicas import pid_alive

TEXTS = [
    "graph nodes learn",
    "a short one",
    "the scheduler batches requests of very different lengths into one call today",
    "x",
]
# 40 texts from 1 to ~200 characters: one call that the pool splits by length over both actors.
MIXED = [f"w{i} " * (1 + (i * 7) % 50) for i in range(40)]
EXECUTOR = ExecutorSettings(backend="ray", cpu=4, memory_mb=4096)


@pytest.fixture(scope="module")
def before(ray_cluster: object) -> dict[str, Any]:
    """The cluster as it was before this module started actors (CPUs free, connection users)."""
    import ray

    return {"cpu": ray.available_resources().get("CPU", 0.0), "users": rc._USERS}


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, dirs: dict[str, Path], before: dict[str, Any]
) -> Iterator[ModelService]:
    root = tmp_path_factory.mktemp("ray-replica-service")
    with replica_service(root, dirs, replicas=2, replica_backend="ray", executor=EXECUTOR) as svc:
        yield svc


def _wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _free_cpu() -> float:
    import ray

    return float(ray.available_resources().get("CPU", 0.0))


def _proc_gone(pid: int) -> bool:
    return not pid_alive(pid)


def test_actor_replicas_embed_like_the_in_process_model(service: ModelService) -> None:
    with service.lease("emb-local") as local:
        expected, expected_counts = local.embed_with_usage(TEXTS)
        expected_raw = local.embed(TEXTS, normalize=False, pooling="cls").numpy()
        expected_mixed, mixed_counts = local.embed_with_usage(MIXED)
    pool = pool_of(service, "emb")
    assert pool.stats()["threads_per_replica"] == 1 and pool.stats()["alive"] == 2
    with service.lease("emb") as model:
        vectors, counts = model.embed_with_usage(TEXTS)
        raw, _ = model.embed_with_usage(TEXTS, normalize=False, pooling="cls")
        one = model.embed([TEXTS[2]])
    assert vectors.dtype == np.float32 and vectors.shape == tuple(expected.shape)
    assert counts == expected_counts
    np.testing.assert_allclose(vectors, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(raw, expected_raw, atol=1e-5)
    np.testing.assert_allclose(one, expected.numpy()[2:3], atol=1e-5)

    # One call of 40 texts of mixed lengths: split by length, one part per actor.
    stats = pool.stats()
    with service.lease("emb") as model:
        got, got_counts = model.embed_with_usage(MIXED)
    after = pool.stats()
    assert got.shape == (40, 64) and got_counts == mixed_counts
    np.testing.assert_allclose(got, expected_mixed.numpy(), atol=1e-5)
    assert after["texts"] - stats["texts"] == 40
    assert after["batches"] - stats["batches"] == 2  # both actors took a part


def test_classification_through_one_actor_matches_in_process(
    service: ModelService, dirs: dict[str, Path]
) -> None:
    from open_autoglm.ml.text.classification import Classifier

    expected = Classifier.from_path(dirs["cls"]).classify(TEXTS, top_k=None)
    pool = pool_of(service, "cls")
    assert pool.size == 1 and pool.stats()["alive"] == 1
    with service.lease("cls") as model:
        got = model.classify(TEXTS, top_k=None)
        top = model.classify(TEXTS, top_k=1)
    assert [[p["label"] for p in row] for row in got] == [
        [p["label"] for p in row] for row in expected
    ]
    for row, ref in zip(got, expected, strict=True):
        np.testing.assert_allclose([p["score"] for p in row], [p["score"] for p in ref], atol=1e-5)
    assert [[p["label"] for p in row] for row in top] == [[row[0]["label"]] for row in expected]


def test_replicas_are_ray_actors_in_processes_of_their_own(
    service: ModelService, before: dict[str, Any]
) -> None:
    import ray

    emb, cls = pool_of(service, "emb"), pool_of(service, "cls")
    pids = emb.pids() + cls.pids()
    assert len({os.getpid(), *pids}) == 4  # three actor processes, none of them this one
    for pid in pids:  # Ray names its actor workers' processes after the actor class
        assert b"ray::_WorkerActor" in Path(f"/proc/{pid}/cmdline").read_bytes()
    names = [r.name for p in (emb, cls) for r in p._all.values()]  # type: ignore[attr-defined]
    assert len(set(names)) == 3 and set(names) <= set(ray.util.list_named_actors())
    info = service.stats()["models"]
    assert info["emb"]["replicas"]["replica_kind"] == "ray-actor"
    assert info["emb"]["replicas"]["alive"] == 2
    assert info["cls"]["replicas"]["replica_kind"] == "ray-actor"
    assert "replicas" not in info["emb-local"]
    # Each actor reserves one CPU (one torch thread), and the pools hold the Ray connection.
    _wait_for(lambda: _free_cpu() == before["cpu"] - 3, "3 CPUs reserved by the actors")
    assert rc._USERS == before["users"] + 2


def test_an_actor_killed_while_idle_is_replaced_without_failing_a_request(
    service: ModelService,
) -> None:
    import ray

    pool = pool_of(service, "emb")
    restarts = pool.restarts
    victim = pool._all[0]
    ray.kill(victim.actor)  # type: ignore[attr-defined]
    _wait_for(lambda: _proc_gone(victim.pid), "the killed actor's process to exit")
    with service.lease("emb") as model:
        for text in TEXTS:  # one-text calls wake one worker each, the dead one's among them
            assert model.embed([text]).shape == (1, 64)
    _wait_for(
        lambda: pool.restarts == restarts + 1 and pool.stats()["alive"] == 2,
        "the replacement",
        timeout=60,
    )
    assert victim.pid not in pool.pids()
    assert victim.name not in ray.util.list_named_actors()  # type: ignore[attr-defined]


def test_an_actor_killed_mid_batch_fails_only_that_batch_and_is_replaced_under_load(
    service: ModelService,
) -> None:
    import ray

    with service.lease("emb-local") as local:
        expected = local.embed(TEXTS).numpy()
    pool = pool_of(service, "emb")
    restarts = pool.restarts
    victim, other = pool._all[0], pool._all[1]
    pids = pool.pids()
    for pid in pids:  # both actors stop inside their next call, so both calls are in flight
        os.kill(pid, signal.SIGSTOP)
    try:
        with service.lease("emb") as model:
            futures = model.embed_many([["this batch"], ["and that batch, a longer one"]])
            _wait_for(lambda: all(r.busy for r in pool._all.values()), "both actors busy")
            ray.kill(victim.actor)  # type: ignore[attr-defined]
            os.kill(other.pid, signal.SIGCONT)
            outcomes = [f.exception(timeout=30) for f in futures]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    failed = [e for e in outcomes if e is not None]
    assert len(failed) == 1 and isinstance(failed[0], TaskFailedError)
    assert re.search(
        rf"replica 0 \(pid {victim.pid}\) exited \(Ray actor died: \w+.*\) while running this "
        "batch",
        str(failed[0]),
    )

    # Clients keep calling while the victim is replaced: the live actor serves them, nobody
    # waits forever, and once the successor is up both serve again.
    answers: list[Any] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                with service.lease("emb") as model:
                    answers.append(model.embed(TEXTS))
            except Exception as exc:
                answers.append(exc)

    clients = [threading.Thread(target=client) for _ in range(3)]
    for t in clients:
        t.start()
    try:
        _wait_for(
            lambda: pool.restarts == restarts + 1 and pool.stats()["alive"] == 2,
            "the replacement",
            timeout=60,
        )
        during = len(answers)
        batches = pool.stats()["batches"]
        _wait_for(lambda: len(answers) >= during + 10, "calls after the replacement")
    finally:
        stop.set()
        for t in clients:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in clients), "a caller hangs"
    assert during > 0  # served by the live actor while the successor loaded
    for vectors in answers:
        assert not isinstance(vectors, BaseException), vectors
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert pool.stats()["batches"] - batches >= 10
    assert victim.pid not in pool.pids() and other.pid in pool.pids()
    _wait_for(lambda: _proc_gone(victim.pid), "the killed actor's process to exit")


def test_a_load_failure_is_the_same_typed_error_as_for_processes(
    tmp_path: Path, ray_cluster: object
) -> None:
    entry = {
        "name": "broken",
        "backend": "transformers",
        "source": str(tmp_path / "no-such-model"),
        "task_types": ["embedding"],
        "dtype": None,
        "options": {},
    }
    raised: dict[str, BaseException] = {}

    def start(launcher: WorkerLauncher) -> None:
        try:
            WorkerPool("broken", entry, replicas=1, cache_dir=tmp_path, launcher=launcher)
        except BaseException as exc:
            raised[launcher.kind] = exc

    users = rc._USERS
    starts = [  # both import torch: side by side
        threading.Thread(target=start, args=(launcher,))
        for launcher in (ProcessLauncher(), RayLauncher(EXECUTOR))
    ]
    for t in starts:
        t.start()
    for t in starts:
        t.join(timeout=120)
    assert rc._USERS == users  # the pool that did not start released the connection
    process, actor = raised["process"], raised["ray-actor"]
    assert isinstance(actor, AutoGLMError)
    assert type(actor) is type(process) and str(actor) == str(process)
    assert "model directory not found" in str(actor)


def test_closing_the_service_kills_the_actors_and_releases_ray(
    service: ModelService, before: dict[str, Any]
) -> None:
    import ray

    pools = [pool_of(service, "emb"), pool_of(service, "cls")]
    replicas = [r for p in pools for r in p._all.values()]
    pids = [r.pid for r in replicas]
    names = [r.name for r in replicas]  # type: ignore[attr-defined]
    assert len(pids) == 3 and not any(_proc_gone(pid) for pid in pids)
    service.close()  # evicts every model: each pool stops its actors and releases Ray
    assert service.cache.state("emb") is None and service.cache.state("cls") is None
    assert not set(names) & set(ray.util.list_named_actors())
    _wait_for(lambda: all(_proc_gone(pid) for pid in pids), "the actor processes to exit")
    _wait_for(lambda: _free_cpu() == before["cpu"], "the actors' CPUs to return")
    assert rc._USERS == before["users"]
