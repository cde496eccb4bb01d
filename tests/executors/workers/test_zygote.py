"""Replicas forked from the zygote: every pool's replicas are children of one pre-imported
process, a killed one is replaced by another fork, and its exit code is still known."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from helpers.replicas import pool_of, replica_service
from open_autoglm.executors.model_service import ModelService
from open_autoglm.executors.workers.zygote import ZygoteProcess, shared_zygote

pytestmark = pytest.mark.skipif(
    not shared_zygote().supported(), reason="the zygote needs pidfds (Linux)"
)


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, dirs: dict[str, Path]
) -> Iterator[ModelService]:
    with replica_service(tmp_path_factory.mktemp("zygote-service"), dirs, replicas=2) as svc:
        yield svc


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_every_pools_replicas_are_forks_of_one_preloaded_zygote(service: ModelService) -> None:
    zygote = shared_zygote().pid
    assert zygote is not None and zygote != os.getpid()
    pids = pool_of(service, "emb").pids() + pool_of(service, "cls").pids()
    assert len(set(pids)) == 3
    assert {psutil.Process(pid).ppid() for pid in pids} == {zygote}
    # The replicas say so too, and the zygote had torch imported before it forked them.
    assert {pool_of(service, "emb")._all[i].info["parent"] for i in (0, 1)} == {zygote}
    assert "torch" in " ".join(psutil.Process(zygote).cmdline())


def test_a_killed_replica_is_replaced_by_another_fork_and_its_exit_code_known(
    service: ModelService, caplog: pytest.LogCaptureFixture
) -> None:
    pool = pool_of(service, "emb")
    restarts = pool.restarts
    victim = pool._all[1]
    assert isinstance(victim.proc, ZygoteProcess)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.proc.wait(30) == -signal.SIGKILL
    assert victim.exit_status() == f"code {-signal.SIGKILL}"
    with caplog.at_level(logging.WARNING), service.lease("emb") as model:
        for text in ["one", "two", "three", "four"]:  # the dead replica's worker wakes too
            assert model.embed([text]).shape == (1, 64)
    _wait_for(lambda: pool.restarts == restarts + 1 and pool.stats()["alive"] == 2, "restart")
    successor = pool._all[1]
    assert successor.pid != victim.pid
    assert psutil.Process(successor.pid).ppid() == shared_zygote().pid
    assert f"replica 1 (pid {victim.pid}) died (code -9)" in caplog.text


def test_the_pool_start_says_how_far_it_got(
    service: ModelService, caplog: pytest.LogCaptureFixture
) -> None:
    service.cache.evict("cls")
    with caplog.at_level(logging.INFO, logger="open_autoglm.executors.workers.pool"):
        pool = pool_of(service, "cls")
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loading")]
    assert steps[0] == "loading model cls: 1 replica(s) started, loading"
    assert steps[-1].startswith("loading model cls: replica 1/1 ready after ")
    assert pool.stats()["alive"] == 1
