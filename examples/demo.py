"""A tour of Open-AutoGLM in one process: tasks, rules, a workflow, graph learning, embeddings.

Run with ``make demo``. It starts the app in-process (no port needed) on a temporary data
directory, registers the bundled MiniLM (``examples/models/minilm.json``), and prints what each
step returned. With ``AUTOGLM_URL`` set it takes the same tour on that server instead.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from open_autoglm.api.app import create_app
from open_autoglm.config import load_settings

MINILM = Path(__file__).parent / "models" / "minilm.json"


def wait(client: Any, task_id: str) -> dict:
    while True:
        task = client.get(f"/v1/tasks/{task_id}").json()
        if task["status"] in ("succeeded", "failed", "cancelled"):
            return task
        time.sleep(0.2)


def graph(n_per_class: int = 30, classes: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.normal(0, 1, (classes, 8))[y] + rng.normal(0, 1, (len(y), 8))
    edges = {
        (int(a), int(b))
        for a, b in rng.integers(0, len(y), (len(y) * 6, 2))
        if a != b and (y[a] == y[b] or rng.random() < 0.1)
    }
    ids = [f"paper-{i}" for i in range(len(y))]
    return {
        "nodes": ids,
        "edges": sorted({tuple(sorted((ids[a], ids[b]))) for a, b in edges}),
        "features": x.round(4).tolist(),
        "labels": [f"topic-{c}" for c in y],
    }


def main() -> None:
    url = os.environ.get("AUTOGLM_URL")
    if url:
        with httpx.Client(base_url=url, timeout=300) as client:
            tour(client)
        return
    with tempfile.TemporaryDirectory() as tmp:
        with TestClient(create_app(load_settings(data_dir=Path(tmp)))) as client:
            tour(client)


def tour(c: Any) -> None:
    """Each step of the tour, on a TestClient or an httpx.Client (same interface)."""
    if c.get("/v1/models/registry/minilm").status_code == 404:
        c.post("/v1/models/registry", json=json.loads(MINILM.read_text()))

    print("1. echo, the seed's flat form, priority by name")
    t = c.post("/v1/tasks", json={"task_type": "echo", "input": "hello", "priority": "high"}).json()
    print("  ", wait(c, t["id"])["result"])

    print("2. a bad spec gets every problem back")
    bad = c.post("/v1/tasks", json={"task_type": "sleep", "seconds": -1, "colour": "red"}).json()
    for d in bad["error"]["details"]:
        print("   ", d["loc"], d["msg"])

    print("3. rules: user_login with risk_score > 0.8 triggers block_access")
    ruleset = {
        "name": "access",
        "rules": [
            {
                "name": "block_access",
                "when": [{"user_login": {"user": "?u", "risk_score": {">": 0.8}}}],
                "then": [{"emit": {"action": "block_access", "user": "?u"}}],
            }
        ],
    }
    print("  ", c.put("/v1/rulesets/access", json=ruleset).status_code, "stored")
    out = c.post(
        "/v1/rulesets/access/evaluate",
        json={
            "facts": [
                {"type": "user_login", "user": "mallory", "risk_score": 0.93},
                {"type": "user_login", "user": "alice", "risk_score": 0.12},
            ]
        },
    ).json()
    print("   emitted:", out["emitted"])

    print("4. embeddings from the bundled all-MiniLM-L6-v2 (OpenAI-compatible route)")
    emb = c.post(
        "/v1/embeddings",
        json={"model": "minilm", "input": ["a cat sat", "a feline rested"]},
    ).json()
    a, b = (np.array(d["embedding"]) for d in emb["data"])
    print(f"   dim {a.size}, cosine {float(a @ b):.3f}, usage {emb['usage']}")

    print("5. graph learning: train GraphSAGE on a small citation-like graph, then predict")
    g = graph()
    t = c.post(
        "/v1/tasks",
        json={
            "task_type": "graph-train",
            "input": g,
            "params": {"kind": "sage", "epochs": 60, "name": "papers"},
        },
    ).json()
    done = wait(c, t["id"])
    print("   metrics:", {k: round(v, 3) for k, v in done["result"]["metrics"].items()})
    pred = c.post(
        "/v1/infer",
        json={
            "task_type": "graph-predict",
            "model": "papers",
            "params": {"node_ids": g["nodes"][:3]},
        },
    ).json()["result"]
    for p in pred["predictions"]:
        print("   ", p["node"], "->", p["label"])

    print("6. a workflow: fan out over items, then join")
    wf = {
        "name": "demo",
        "inputs": {"items": {"default": [1, 2, 3]}},
        "steps": [
            {
                "name": "each",
                "map": "${inputs.items}",
                "task": {"task_type": "echo", "input": "${item}"},
            },
            {
                "name": "total",
                "depends_on": ["each"],
                "task": {"task_type": "echo", "input": "${steps.each.output}"},
            },
        ],
    }
    run = c.post("/v1/workflows", json={"spec": wf}).json()
    while (state := c.get(f"/v1/workflows/runs/{run['id']}").json())["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        time.sleep(0.2)
    print("   run", state["status"], "outputs:", state.get("outputs"))


if __name__ == "__main__":
    main()
