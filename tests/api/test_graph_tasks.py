"""graph-train / graph-predict through the whole platform: API, scheduler, a killable
subprocess worker, the artifact store and the model registry (via the service proxy)."""

from __future__ import annotations

from helpers.graphs import community_graph
from helpers.polling import wait_task


def test_train_in_subprocess_stores_artifacts_registers_and_predicts(api):
    graph = community_graph(n_per_class=20, classes=3, dim=6, seed=3)
    resp = api.post(
        "/v1/tasks",
        json={
            "task_type": "graph-train",
            "input": graph,
            "params": {
                "kind": "sage",
                "hidden": 16,
                "epochs": 40,
                "lr": 0.02,
                "name": "communities",
            },
            "timeout_s": 120,
        },
    )
    assert resp.status_code == 202, resp.text
    task = wait_task(api, resp.json()["id"])
    assert task["status"] == "succeeded", task["error"]
    result = task["result"]
    assert result["registered"] == "communities"
    assert result["metrics"]["test_acc"] >= 0.6
    png = api.get(f"/v1/artifacts/{result['artifacts']['curves']}/content")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    weights = api.get(f"/v1/artifacts/{result['artifacts']['weights']}").json()
    assert weights["size"] > 0 and weights["task_id"] == task["id"]
    events = api.get(f"/v1/tasks/{task['id']}/events").json()["events"]
    assert sum(1 for e in events if e["kind"] == "progress") >= 10  # per-epoch progress
    registry = api.get("/v1/models/registry/communities").json()
    assert registry["backend"] == "graph" and "graph-predict" in registry["task_types"]

    pred = api.post(
        "/v1/infer",
        json={
            "task_type": "graph-predict",
            "model": "communities",
            "params": {"node_ids": graph["nodes"][:5]},
        },
    )
    assert pred.status_code == 200, pred.text
    out = pred.json()["result"]
    assert [p["node"] for p in out["predictions"]] == graph["nodes"][:5]
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-3 for p in out["predictions"])


def test_invalid_graph_is_rejected_with_every_problem(api):
    bad = {
        "nodes": [1, 2, 2],
        "edges": [[1, 5], [2, 7]],
        "features": [[0.0], [1.0]],
        "labels": [0, 1, 0],
    }
    task = wait_task(
        api, api.post("/v1/tasks", json={"task_type": "graph-train", "input": bad}).json()["id"]
    )
    assert task["status"] == "failed" and task["error"]["code"] == "validation_error"
    messages = " ".join(d["msg"] for d in task["error"]["details"])
    assert "references undeclared node 5" in messages and "undeclared node 7" in messages
    assert "duplicate" in messages
