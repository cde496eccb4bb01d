"""Training on the shared facility through the whole platform: a checkpoint per epoch, and a
task whose rank is SIGKILLed mid-run is retried from its last checkpoint, ending where an
uninterrupted run ends."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

from helpers.graphs import community_graph
from helpers.polling import wait_task
from open_autoglm.spec.graph import parse_graph
from open_autoglm.tasks.graph import GraphTrainParams, train_graph

EPOCHS = 6
PARAMS: dict[str, Any] = {
    "kind": "sage",
    "hidden": 16,
    "epochs": EPOCHS,
    "lr": 0.02,
    "mode": "sampled",
    "batch_size": 16,
    "fanout": [5, 5],
    "distributed": {"strategy": "ddp", "world_size": 2},
}


def _submit(api: Any, graph: dict[str, Any], **extra: Any) -> str:
    resp = api.post(
        "/v1/tasks",
        json={
            "task_type": "graph-train",
            "input": graph,
            "params": PARAMS,
            "timeout_s": 300,
            **extra,
        },
    )
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _task(api: Any, task_id: str) -> dict[str, Any]:
    return dict(api.get(f"/v1/tasks/{task_id}").json())


def _manifest_ids(api: Any, task_id: str) -> dict[int, str]:
    """Epoch -> the artifact id of its checkpoint manifest."""
    rows = api.get("/v1/artifacts", params={"limit": 500}).json()["artifacts"]
    return {
        int(m.group(1)): r["id"]
        for r in rows
        if r["task_id"] == task_id
        and (m := re.fullmatch(r"checkpoint-epoch(\d+)\.json", r["name"]))
    }


def _checkpoint_epochs(api: Any, task_id: str) -> list[int]:
    return sorted(_manifest_ids(api, task_id))


def _messages(api: Any, task_id: str) -> list[str]:
    events = api.get(f"/v1/tasks/{task_id}/events").json()["events"]
    return [e["data"].get("message", "") for e in events if e["kind"] == "log"]


def test_a_killed_rank_is_retried_from_the_last_checkpoint(api: Any) -> None:
    graph = community_graph(n_per_class=120, classes=3, dim=8, seed=5)
    # the uninterrupted run, in this process: the same facility, seeds and thread count
    plain = train_graph(parse_graph(graph), GraphTrainParams(**PARAMS)).result

    # the same job, one rank SIGKILLed once epoch 2's checkpoint exists
    task_id = _submit(api, graph, max_retries=1)
    pids: dict[int, int] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        len(pids) == 2 and 1 in _checkpoint_epochs(api, task_id)
    ):
        for msg in _messages(api, task_id):
            if m := re.match(r"rank (\d) started \(pid (\d+), process\)", msg):
                pids[int(m.group(1))] = int(m.group(2))
        time.sleep(0.05)
    done_before_kill = max(_checkpoint_epochs(api, task_id))
    assert done_before_kill < EPOCHS - 1, "training ended before the kill: make epochs longer"
    os.kill(pids[1], signal.SIGKILL)

    task = wait_task(api, task_id)
    assert task["status"] == "succeeded", task["error"]
    assert task["attempts"] == 2
    # a checkpoint per epoch over both attempts; progress with samples/s and ETA
    assert _checkpoint_epochs(api, task_id) == list(range(EPOCHS))
    events = api.get(f"/v1/tasks/{task_id}/events").json()["events"]
    steps = [e["data"] for e in events if e["kind"] == "progress" and "samples_per_s" in e["data"]]
    assert steps and all(s["samples_per_s"] > 0 and s["eta_s"] >= 0 for s in steps)
    assert steps[-1]["eta_s"] == 0
    resumed = task["result"]["resumed_from_epoch"]
    # at most one epoch of work repeated: the retry starts after the newest checkpoint
    assert resumed is not None and resumed >= done_before_kill
    assert any(
        m.startswith("resuming from the checkpoint of epoch") for m in _messages(api, task_id)
    )
    # ... and ends where the uninterrupted run ended
    assert abs(task["result"]["metrics"]["test_acc"] - plain.metrics["test_acc"]) <= 0.005
    assert task["result"]["best_epoch"] == plain.best_epoch
    # every manifest names the best weights so far, the retry's too; the last, the best epoch's
    best = [
        api.get(f"/v1/artifacts/{artifact}/content").json()["best_weights"]
        for _, artifact in sorted(_manifest_ids(api, task_id).items())
    ]
    assert all(best)
    last = api.get(f"/v1/artifacts/{best[-1]}").json()
    assert last["name"] == f"best-epoch{plain.best_epoch:04d}.safetensors"
