"""text-classifier-train through the whole platform: a CSV artifact in, a killable training
subprocess on the shared facility, a registered model out, served by a replica process
through ``/v1/infer`` with no other step; bad tables and params answered field by field."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from helpers.classifiers import LABELS, sentiment_texts
from helpers.polling import wait_task
from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.runtime import Runtime

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

    root = tmp_path_factory.mktemp("text-train")
    encoder = build_tiny_bert_embedder(root / "tiny-encoder")
    # one replica process serves each classification model: the path users get, kept small
    settings = make_settings(root / "data", models={"replicas": 1})
    with TestClient(create_app(runtime=Runtime(settings))) as client:
        entry = {"name": "tiny-enc", "source": str(encoder), "task_types": ["embedding"]}
        assert client.post("/v1/models/registry", json=entry).status_code == 201
        yield client


def csv_bytes(n: int, seed: int = 0) -> bytes:
    texts, labels = sentiment_texts(n, seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["review", "sentiment"])
    writer.writerows([t, LABELS[i]] for t, i in zip(texts, labels, strict=True))
    return out.getvalue().encode()


def spec(input: object, model: str = "tiny-enc", **params: object) -> dict:
    base = {"text_column": "review", "label_column": "sentiment", "max_length": 32}
    return {
        "task_type": "text-classifier-train",
        "model": model,
        "input": input,
        "params": {**base, **params},
        "timeout_s": 300,
    }


def test_train_on_a_csv_register_and_classify_through_infer(api: TestClient) -> None:
    upload = api.post(
        "/v1/artifacts",
        params={"name": "reviews.csv"},
        content=csv_bytes(240),
        headers={"content-type": "text/csv"},
    )
    assert upload.status_code == 201, upload.text
    body = spec(
        {"artifact": upload.json()["id"], "format": "csv"},
        epochs=6, lr=2e-3, batch_size=8, patience=2, name="sentiment-ft",
    )  # fmt: skip
    resp = api.post("/v1/tasks", json=body)
    assert resp.status_code == 202, resp.text
    task = wait_task(api, resp.json()["id"])
    assert task["status"] == "succeeded", task["error"]
    result = task["result"]
    assert result["registered"] == "sentiment-ft"
    assert result["labels"] == ["negative", "neutral", "positive"]
    assert result["rows"] == {"train": 192, "validation": 24, "test": 24}
    test = result["metrics"]["test"]
    assert test["accuracy"] >= 0.9 and set(test["per_class"]) == set(LABELS)
    assert result["history"][0]["val_macro_f1"] < test["macro_f1"]
    for key in ("confusion", "curves"):
        png = api.get(f"/v1/artifacts/{result['artifacts'][key]}/content")
        assert png.status_code == 200 and png.content.startswith(PNG)
    assert "model.safetensors" in result["artifacts"]["model_files"]

    events = api.get(f"/v1/tasks/{task['id']}/events").json()["events"]
    import json

    print(json.dumps([(e.get("ts"), e["kind"], str(e["data"])[:80]) for e in events], indent=0))
    steps = [e["data"] for e in events if e["kind"] == "progress" and "loss" in e["data"]]
    assert steps and {"samples_per_s", "eta_s", "epoch"} <= set(steps[-1])

    registry = api.get("/v1/models/registry/sentiment-ft").json()
    assert registry["backend"] == "hf" and registry["task_types"] == ["text-classification"]
    texts, labels = sentiment_texts(12, seed=5)  # texts the model never saw
    out = api.post(
        "/v1/infer",
        json={"task_type": "text-classification", "model": "sentiment-ft", "input": texts},
    )
    assert out.status_code == 200, out.text
    predicted = [p[0]["label"] for p in out.json()["result"]["predictions"]]
    assert sum(p == LABELS[i] for p, i in zip(predicted, labels, strict=True)) >= 11


def test_bad_params_and_models_are_refused_with_the_field(api: TestClient) -> None:
    rows = [{"review": "good", "sentiment": "positive"}]
    for params, loc in (
        ({"split": {"validation": 0.9}}, ["params", "split"]),
        ({"labels": ["only"]}, ["params", "labels"]),
        ({"distributed": {"strategy": "none", "world_size": 2}}, ["params", "distributed"]),
        ({"text_column": "sentiment"}, ["params"]),
        ({"epoch": 3}, ["params", "epoch"]),
    ):
        resp = api.post("/v1/tasks", json=spec(rows, **params))
        assert resp.status_code == 422, (params, resp.text)
        locs = [d["loc"][: len(loc)] for d in resp.json()["error"]["details"]]
        assert loc in locs, (params, locs)
    missing = api.post("/v1/tasks", json={**spec(rows), "model": None})
    assert missing.status_code == 422 and missing.json()["error"]["details"][0]["loc"] == ["model"]
    unknown = api.post("/v1/tasks", json=spec(rows, model="nope"))
    assert unknown.status_code == 404 and unknown.json()["error"]["details"][0]["loc"] == ["model"]
