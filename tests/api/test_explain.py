"""explain through the whole platform: classify a text, explain that task by id, fetch the
heat map; explain an embedding pair and a graph node. Writes one picture per family to
``examples/explain/`` (the pictures in the repository are these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.graphs import community_graph
from helpers.polling import wait_task

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "explain"


def _picture(api: Any, artifact_id: str, name: str) -> bytes:
    resp = api.get(f"/v1/artifacts/{artifact_id}/content")
    assert resp.status_code == 200, resp.text
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    (EXAMPLES / name).write_bytes(resp.content)
    return resp.content


def _register(api: Any, name: str, source: Path, task_type: str) -> None:
    entry = {"name": name, "backend": "hf", "source": str(source), "task_types": [task_type],
             "options": {"replicas": 0}}  # fmt: skip
    resp = api.post("/v1/models/registry", json=entry)
    assert resp.status_code == 201, resp.text


def test_classify_then_explain_that_task_and_fetch_the_heat_map(api, tiny_sentiment_dir):
    _register(api, "sentiment", tiny_sentiment_dir, "text-classification")
    text = "the cat sat on the mat and i loved it"
    classified = api.post(
        "/v1/infer", json={"task_type": "text-classification", "model": "sentiment", "input": text}
    )
    assert classified.status_code == 200, classified.text
    predicted = classified.json()["result"]["predictions"][0][0]["label"]
    assert predicted == "positive"

    resp = api.post(
        "/v1/infer", json={"task_type": "explain", "params": {"task_id": classified.json()["id"]}}
    )
    assert resp.status_code == 200, resp.text
    out = resp.json()["result"]
    (explained,) = out["explanations"]
    assert out["model"] == "sentiment" and explained["target"] == predicted
    assert explained["top_tokens"][0]["name"] == "loved"
    change = explained["output"] - explained["baseline_output"]
    assert abs(explained["convergence_delta"]) <= 0.01 * abs(change)
    page = _picture(api, out["pictures"]["token_heatmap_html"], "text-classifier.html").decode()
    assert "loved" in page and "<script" not in page
    png = _picture(api, out["pictures"]["token_heatmap_png"], "text-classifier.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    # the gradient copy lives in the model cache, counted against its budget, and goes with
    # its model
    cache = api.get("/v1/models/registry").json()["cache"]
    copy = cache["models"]["sentiment#gradients"]
    assert copy["bytes"] > 0 and cache["used_bytes"] >= copy["bytes"] and copy["leases"] == 0
    entry = {"name": "sentiment", "backend": "hf", "source": str(tiny_sentiment_dir),
             "task_types": ["text-classification"], "options": {"replicas": 0}}  # fmt: skip
    assert api.post("/v1/models/registry?replace=true", json=entry).status_code == 201
    assert "sentiment#gradients" not in api.get("/v1/models/registry").json()["cache"]["models"]

    # an unknown task id, and a task that is not a prediction, answer 4xx with the field
    missing = api.post("/v1/infer", json={"task_type": "explain", "params": {"task_id": "nope"}})
    assert missing.status_code == 404
    bad = api.post(
        "/v1/infer",
        json={
            "task_type": "explain",
            "model": "sentiment",
            "input": text,
            "params": {"target": "x"},
        },
    )
    assert bad.status_code == 422 and "target" in bad.text


def test_embedding_pair_explained_on_both_sides(api, tmp_path):
    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

    _register(api, "tiny-emb", build_tiny_bert_embedder(tmp_path / "emb"), "embedding")
    resp = api.post(
        "/v1/infer",
        json={"task_type": "explain", "model": "tiny-emb",
              "input": ["the cat sat on the mat", "a dog sat on the log"]},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    out = resp.json()["result"]
    (pair,) = out["explanations"]
    assert pair["a"]["tokens"][1] == "the" and pair["b"]["tokens"][1] == "a"
    assert _picture(api, out["pictures"]["token_heatmap_png"], "embedding.png")[:4] == b"\x89PNG"


def test_graph_node_explained_with_its_subgraph(api):
    graph = community_graph(n_per_class=20, classes=3, dim=6, seed=3)
    resp = api.post(
        "/v1/tasks",
        json={"task_type": "graph-train", "input": graph, "timeout_s": 180,
              "params": {"kind": "gcn", "hidden": 16, "epochs": 60, "lr": 0.02, "name": "comm"}},
    )  # fmt: skip
    assert resp.status_code == 202, resp.text
    assert wait_task(api, resp.json()["id"])["status"] == "succeeded"
    node = graph["nodes"][5]
    resp = api.post(
        "/v1/infer",
        json={"task_type": "explain", "model": "comm", "params": {"node_ids": [node], "top_k": 5}},
    )
    assert resp.status_code == 200, resp.text
    out = resp.json()["result"]
    (explained,) = out["explanations"]
    assert explained["node"] == node and len(explained["top_edges"]) == 5
    assert all(a in graph["nodes"] and b in graph["nodes"] for a, b in explained["top_edges"])
    assert explained["fidelity_plus"] >= explained["fidelity_plus_random"]
    assert _picture(api, out["pictures"]["subgraph_png"], "graph.png")[:4] == b"\x89PNG"
