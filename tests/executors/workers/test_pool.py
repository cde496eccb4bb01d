"""Model replicas in worker processes: same vectors as in-process, crash isolation, eviction.

One service with real replica processes (tiny random-init BERT models) serves every test here;
starting a replica imports torch and transformers, so the module shares one pool.
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
import psutil
import pytest

from helpers.replicas import pool_of, replica_service
from open_autoglm.errors import TaskFailedError
from open_autoglm.executors.model_service import ModelService
from open_autoglm.executors.workers.pool import WorkerPool
from open_autoglm.executors.workers.split_merge import split_by_length

TEXTS = [
    "graph nodes learn",
    "a short one",
    "the scheduler batches requests of very different lengths into one call today",
    "x",
]


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, dirs: dict[str, Path]
) -> Iterator[ModelService]:
    with replica_service(tmp_path_factory.mktemp("replica-service"), dirs, replicas=2) as svc:
        yield svc


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_replicas_embed_like_the_in_process_model(service: ModelService) -> None:
    with service.lease("emb-local") as local:
        expected, expected_counts = local.embed_with_usage(TEXTS)
    pool = pool_of(service, "emb")
    stats = pool.stats()
    assert stats["threads_per_replica"] == 1 and stats["alive"] == 2
    # Each replica measures its pack size at load (they may differ: each timed its own).
    packs = (
        stats["pack_tokens"] if isinstance(stats["pack_tokens"], list) else [stats["pack_tokens"]]
    )
    assert set(packs) <= {128, 256, 512, 1024}
    assert len({os.getpid(), *pool.pids()}) == 3  # two processes of their own
    with service.lease("emb") as model:
        vectors, counts = model.embed_with_usage(TEXTS)
        raw, _ = model.embed_with_usage(TEXTS, normalize=False, pooling="cls")
    assert vectors.dtype == np.float32 and vectors.shape == tuple(expected.shape)
    assert counts == expected_counts
    assert _cosines(vectors, expected.numpy()).min() > 0.9999
    with service.lease("emb-local") as local:
        raw_local = local.embed(TEXTS, normalize=False, pooling="cls").numpy()
    np.testing.assert_allclose(raw, raw_local, rtol=1e-4, atol=1e-5)
    # Every replica's memory counts against the budget: the weights, plus a packed copy of
    # the Linears' when its own measurement at load kept a packed form (each replica and the
    # in-process model measure for themselves, so their forms may differ).
    import torch

    linears = sum(
        m.weight.numel() * m.weight.element_size()
        for m in local.model.modules()
        if isinstance(m, torch.nn.Linear)
    )
    plain = local.memory_bytes - (linears if local.linear != "torch" else 0)
    infos = [r.info for r in pool._all.values()]
    for info in infos:
        assert info["memory_bytes"] == plain + (linears if info["linear"] != "torch" else 0)
    per = max(int(info["memory_bytes"]) for info in infos)
    assert service.stats()["models"]["emb"]["bytes"] == 2 * per


def _paused(pool: WorkerPool) -> list[int]:
    """SIGSTOP every replica (their worker threads then block in a call); returns the pids."""
    pids = pool.pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def _wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_waiting_calls_are_merged_and_each_gets_its_own_rows(service: ModelService) -> None:
    with service.lease("emb-local") as local:
        alone = [local.embed([t]).numpy()[0] for t in TEXTS]
    pool = pool_of(service, "emb")
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        with service.lease("emb") as model:
            results[i] = model.embed([TEXTS[i % len(TEXTS)]] * (1 + i % 3))

    pids = _paused(pool)
    try:
        # Two calls occupy both (paused) replicas; 22 more must wait, so they can be merged.
        first = [threading.Thread(target=call, args=(i,)) for i in (0, 1)]
        for t in first:
            t.start()
        _wait_for(lambda: all(r.busy for r in pool._all.values()), "both replicas busy")
        before = pool.stats()
        threads = [threading.Thread(target=call, args=(i,)) for i in range(2, 24)]
        for t in threads:
            t.start()
        _wait_for(lambda: sum(len(r.texts) for r in pool._pending) >= 40, "22 waiting calls")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    for t in first + threads:
        t.join()
    for i, rows in results.items():
        assert rows.shape[0] == 1 + i % 3
        assert _cosines(rows, np.stack([alone[i % len(TEXTS)]] * rows.shape[0])).min() > 0.9999
    after = pool.stats()
    assert len(results) == 24
    assert after["texts"] - before["texts"] == sum(1 + i % 3 for i in range(24))
    # 2 calls in flight, then 22 waiting calls of 1-3 texts went out as a few merged calls.
    assert after["batches"] - before["batches"] <= 2 + 4


def test_each_request_is_answered_when_its_own_call_returns(service: ModelService) -> None:
    pool = pool_of(service, "emb")
    pids = _paused(pool)
    try:
        with service.lease("emb") as model:
            futures = model.embed_many([["a short one"], [TEXTS[2]]])
            _wait_for(lambda: all(r.busy for r in pool._all.values()), "both replicas busy")
            os.kill(pids[0], signal.SIGCONT)  # one replica answers; the other stays paused
            _wait_for(lambda: any(f.done() for f in futures), "the first answer")
            time.sleep(0.2)
            assert sum(f.done() for f in futures) == 1
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    vectors = [f.result(timeout=30)[0] for f in futures]
    assert [v.shape for v in vectors] == [(1, 64), (1, 64)]


def test_one_big_call_is_split_by_length_over_the_replicas(service: ModelService) -> None:
    assert split_by_length(["aa", "b" * 30], 2) == [[0], [1]]
    assert split_by_length(["x"] * 8, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert split_by_length(["a"], 2) == [[0]]
    with service.lease("emb-local") as local:
        expected = local.embed(TEXTS * 5).numpy()
        counts = local.embed_with_usage(TEXTS * 5)[1]
    pool = pool_of(service, "emb")
    before = pool.stats()
    with service.lease("emb") as model:
        got, got_counts = model.embed_with_usage(TEXTS * 5)  # each replica takes a length range
    assert _cosines(got, expected).min() > 0.9999 and got_counts == counts
    after = pool.stats()
    assert after["texts"] - before["texts"] == 20 and 1 <= after["batches"] - before["batches"] <= 2


def test_classification_replica_matches_in_process(
    service: ModelService, dirs: dict[str, Path]
) -> None:
    from open_autoglm.ml.text.classification import Classifier

    expected = Classifier.from_path(dirs["cls"]).classify(TEXTS, top_k=None)
    with service.lease("cls") as model:
        got = model.classify(TEXTS, top_k=None)
    assert [[p["label"] for p in row] for row in got] == [
        [p["label"] for p in row] for row in expected
    ]
    for row, ref in zip(got, expected, strict=True):
        np.testing.assert_allclose([p["score"] for p in row], [p["score"] for p in ref], atol=1e-5)


def test_a_replica_killed_while_idle_is_replaced_without_failing_a_request(
    service: ModelService,
) -> None:
    pool = pool_of(service, "emb")
    restarts = pool.restarts
    victim = pool._all[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait(10)
    with service.lease("emb") as model:
        for text in TEXTS:  # one-text calls wake one worker each, the dead one's among them
            assert model.embed([text]).shape == (1, 64)
    # ... by the live replica, while the dead one's worker is still starting its successor
    # (which imports torch: seconds, against milliseconds for these calls).
    assert pool.stats()["alive"] == 1
    _wait_for(
        lambda: pool.restarts == restarts + 1 and pool.stats()["alive"] == 2,
        "the replacement",
        timeout=60,
    )
    assert victim.pid not in pool.pids()


def test_a_replica_killed_mid_batch_fails_only_that_batch(service: ModelService) -> None:
    pool = pool_of(service, "emb")
    restarts = pool.restarts
    pids = _paused(pool)
    try:
        with service.lease("emb") as model:
            futures = model.embed_many([["this batch"], ["and that batch, a longer one"]])
            _wait_for(lambda: all(r.busy for r in pool._all.values()), "both replicas busy")
            os.kill(pids[0], signal.SIGKILL)
            os.kill(pids[1], signal.SIGCONT)
            outcomes = [f.exception(timeout=30) for f in futures]
    finally:
        for pid in pids[1:]:
            os.kill(pid, signal.SIGCONT)
    failed = [e for e in outcomes if e is not None]
    assert len(failed) == 1 and isinstance(failed[0], TaskFailedError)
    assert re.search(
        rf"replica 0 \(pid {pids[0]}\) exited .* while running this batch", str(failed[0])
    )
    _wait_for(
        lambda: pool.restarts == restarts + 1 and pool.stats()["alive"] == 2,
        "the replacement",
        timeout=60,
    )
    assert pids[0] not in pool.pids()
    with service.lease("emb") as model:  # both replicas answer again
        assert len(model.embed_many([[t] for t in TEXTS])) == len(TEXTS)
        for _ in range(4):
            assert model.embed(TEXTS).shape == (len(TEXTS), 64)


def test_eviction_stops_the_replica_processes(service: ModelService) -> None:
    pool = pool_of(service, "cls")
    procs = [psutil.Process(pid) for pid in pool.pids()]
    assert procs and all(p.is_running() for p in procs)
    assert service.cache.evict("cls")
    for proc in procs:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert service.cache.state("cls") is None
