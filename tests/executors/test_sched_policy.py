"""The server's threads run under SCHED_BATCH (they yield to computing replicas); the replica
processes get the default policy back; the setting turns it off."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psutil

from helpers.services import ServerProcess
from open_autoglm.executors.workers.process import CHILD_MODULE
from open_autoglm.executors.workers.zygote import ZYGOTE_MODULE


def _policies(pid: int) -> set[int]:
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def _workers(server: int) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The server's model replicas (a fresh interpreter each, or forks of the zygote) and
    the zygote they were forked from (a child of the server itself)."""
    replicas, zygotes = [], []
    for p in psutil.Process(server).children(recursive=True):
        module = p.cmdline()[2:3]
        if module == [CHILD_MODULE] or (module == [ZYGOTE_MODULE] and p.ppid() != server):
            replicas.append(p)
        elif module == [ZYGOTE_MODULE]:
            zygotes.append(p)
    return replicas, zygotes


def test_server_threads_yield_and_replicas_compute_at_the_default_policy(tmp_path: Path) -> None:
    import torch

    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

    torch.set_num_threads(1)
    model = build_tiny_bert_embedder(tmp_path / "emb")
    env = {"AUTOGLM_MODELS__REPLICAS": "1"}
    server = ServerProcess(tmp_path / "on", env=env).start()
    try:
        assert server.proc is not None
        # Every thread, including those started after serve set the policy (event loop,
        # scheduler, storage writer, executor workers).
        threads = _policies(server.proc.pid)
        assert threads == {os.SCHED_BATCH}, threads
        entry = {"name": "emb", "source": str(model), "task_types": ["embedding"]}
        httpx.post(server.url + "/v1/models/registry", json=entry, timeout=30).raise_for_status()
        got = httpx.post(server.url + "/v1/embeddings", json={"model": "emb", "input": "hi"},
                         timeout=120)  # fmt: skip
        assert got.status_code == 200, got.text
        replicas, zygotes = _workers(server.proc.pid)
        assert replicas, "no replica process started"
        for replica in replicas:
            assert _policies(replica.pid) == {os.SCHED_OTHER}
        for zygote in zygotes:  # it only imports and forks: it yields like the server
            assert _policies(zygote.pid) == {os.SCHED_BATCH}
        assert _policies(server.proc.pid) == {os.SCHED_BATCH}  # replica dispatch threads too
    finally:
        server.stop()
    off = {"AUTOGLM_EXECUTOR__YIELD_TO_REPLICAS": "false"}
    server = ServerProcess(tmp_path / "off", env=off).start()
    try:
        assert server.proc is not None
        assert _policies(server.proc.pid) == {os.SCHED_OTHER}
    finally:
        server.stop()
