"""fusion-train / fusion-predict through the whole platform: API, scheduler, a killable
subprocess worker, the artifact store, the embedding cache and the model registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers.polling import wait_task
from helpers.settings import make_settings
from helpers.tables import REVIEW_SCHEMA, review_rows
from open_autoglm.api.app import create_app
from open_autoglm.runtime import Runtime


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

    return build_tiny_bert_embedder(tmp_path_factory.mktemp("emb") / "tiny")


@pytest.fixture(scope="module")
def fusion_api(
    tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Path
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("fusion")
    settings = make_settings(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        # The embedding cache's key index lives beside converted models: one per module.
        mp.setenv("AUTOGLM_MODEL_CACHE", str(root / "model-cache"))
        with TestClient(create_app(runtime=Runtime(settings))) as client:
            entry = {"name": "tiny-emb", "source": str(tiny_embedder), "task_types": ["embedding"]}
            assert client.post("/v1/models/registry", json=entry).status_code == 201
            yield client


def train_spec(rows: list[dict], **params: object) -> dict:
    return {
        "task_type": "fusion-train",
        "input": {"rows": rows},
        "params": {"schema": REVIEW_SCHEMA, "text_model": "tiny-emb", "epochs": 4, **params},
        "timeout_s": 240,
    }


def test_compare_trains_every_strategy_registers_and_predicts(fusion_api: TestClient) -> None:
    api = fusion_api
    rows = review_rows(300)
    resp = api.post("/v1/tasks", json=train_spec(rows, strategy="compare", name="reviews"))
    assert resp.status_code == 202, resp.text
    task = wait_task(api, resp.json()["id"])
    assert task["status"] == "succeeded", task["error"]
    result = task["result"]
    assert set(result["results"]) == {"early", "hybrid", "late", "tabular", "text"}
    for name, r in result["results"].items():
        m = r["metrics"]
        assert 0.0 <= m["accuracy"] <= 1.0 and m["test_rows"] == 60, name
        assert {"macro_f1", "weighted_f1", "roc_auc", "positive_f1"} <= set(m)
    assert result["registered"] == "reviews"
    assert result["text_embeddings"]["cache"] == "miss"
    png = api.get(f"/v1/artifacts/{result['artifacts']['comparison']}/content")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    meta = api.get(f"/v1/artifacts/{result['artifacts']['meta']}/content").json()
    assert meta["preprocess"]["vocabularies"]["Department Name"]  # JSON state, no pickle
    assert set(meta["preprocess"]["scalers"]) == {"Age", "Positive Feedback Count"}
    weights = api.get(f"/v1/artifacts/{result['artifacts']['weights']}").json()
    assert weights["name"].endswith(".safetensors") and weights["task_id"] == task["id"]
    events = api.get(f"/v1/tasks/{task['id']}/events").json()["events"]
    epochs = [e["data"] for e in events if e["kind"] == "progress" and "epoch" in e["data"]]
    assert {e["strategy"] for e in epochs} == set(result["results"])
    registry = api.get("/v1/models/registry/reviews").json()
    assert registry["backend"] == "fusion" and "fusion-predict" in registry["task_types"]

    new_rows = review_rows(3, start=1500)
    new_rows[1]["Title"] = new_rows[1]["Review Text"] = None  # no text: that modality masked
    for row in new_rows:
        del row["Recommended IND"]
    pred = api.post(
        "/v1/infer",
        json={"task_type": "fusion-predict", "model": "reviews", "input": {"rows": new_rows}},
    )
    assert pred.status_code == 200, pred.text
    out = pred.json()["result"]
    assert out["classes"] == [0, 1] and out["strategy"] == result["chosen"]
    assert [p["row"] for p in out["predictions"]] == [0, 1, 2]
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-4 for p in out["predictions"])
    new_rows[2]["Age"] = "old"
    bad = api.post(
        "/v1/infer",
        json={"task_type": "fusion-predict", "model": "reviews", "input": {"rows": new_rows}},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["loc"] == ["input", "Age"]

    # Same rows, same text model: the embeddings come from the cache, not the model.
    again = wait_task(api, api.post("/v1/tasks", json=train_spec(rows, epochs=1)).json()["id"])
    assert again["status"] == "succeeded", again["error"]
    assert again["result"]["text_embeddings"]["cache"] == "hit"
    assert again["result"]["registered"].startswith("fusion-hybrid-")


def test_bad_table_names_every_problem_and_stores_nothing(fusion_api: TestClient) -> None:
    api = fusion_api
    rows = review_rows(40)
    for row in rows:
        row["Recommended IND"] = 1  # one class
        row["Title"] = row["Review Text"] = None  # no text anywhere
        del row["Class Name"]  # a declared column missing
    rows[3]["Age"] = "thirty"  # mistyped
    rows[5]["Positive Feedback Count"] = None  # NaN without an imputation policy
    before = len(api.get("/v1/artifacts").json()["artifacts"])
    task = wait_task(api, api.post("/v1/tasks", json=train_spec(rows, name="bad")).json()["id"])
    assert task["status"] == "failed" and task["error"]["code"] == "validation_error"
    problems = {(tuple(d["loc"]), d["msg"].split(" (")[0]) for d in task["error"]["details"]}
    assert problems == {
        (("input", "Class Name"), "declared column 'Class Name' is missing from the table"),
        (("input", "Title"), "every text cell is empty"),
        (("input", "Age"), "numeric column holds non-numbers"),
        (("input", "Positive Feedback Count"), "missing numbers"),
        (("input", "Recommended IND"), "the label needs at least two classes, found 1"),
    }
    assert len(api.get("/v1/artifacts").json()["artifacts"]) == before
    assert api.get("/v1/models/registry/bad").status_code == 404
    bad_strategy = api.post("/v1/tasks", json=train_spec(rows, strategy="stacked"))
    assert bad_strategy.status_code == 422
    assert "unknown strategy 'stacked'" in bad_strategy.text
