"""What a task names (its model, the artifacts it reads) is checked when it is submitted."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient


def _error(resp: httpx.Response) -> Any:
    return resp.json()["error"]


def test_unregistered_model_is_refused_at_submit_naming_the_field(api: TestClient) -> None:
    resp = api.post(
        "/v1/tasks", json={"task_type": "text-generation", "model": "ghost", "input": "hi"}
    )
    assert resp.status_code == 404, resp.text
    err = _error(resp)
    assert err["details"] == [
        {"loc": ["model"], "msg": "model 'ghost' is not registered (see GET /v1/models/registry)"}
    ]
    assert api.get("/v1/tasks").json()["tasks"] == []  # nothing was stored


def test_artifact_references_are_checked_at_submit(api: TestClient) -> None:
    missing = "ab" * 32
    resp = api.post("/v1/tasks", json={"task_type": "graph-predict", "params": {"meta": missing}})
    assert resp.status_code == 404
    assert _error(resp)["details"][0]["loc"] == ["params", "meta"]

    resp = api.post("/v1/tasks", json={"task_type": "graph-train", "input": {"artifact": ""}})
    assert resp.status_code == 422
    assert _error(resp)["details"][0] == {
        "loc": ["input", "artifact"],
        "msg": "artifact id must be a non-empty string",
    }

    stored = api.post("/v1/artifacts?name=meta.json", content=b"{}").json()
    resp = api.post(
        "/v1/tasks", json={"task_type": "graph-predict", "params": {"meta": stored["id"]}}
    )
    assert resp.status_code == 202, resp.text  # it exists: accepted (it fails later on its content)
