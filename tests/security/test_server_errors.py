"""The inputs that used to end in a 500: each is now a 4xx naming the field."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

HUGE_CURSOR = base64.urlsafe_b64encode(b"9" * 40).decode().rstrip("=")


def _details(r: Any) -> list[dict[str, Any]]:
    return r.json()["error"]["details"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("route", ["/v1/tasks", "/v1/workflows/runs"])
@pytest.mark.parametrize("cursor", [HUGE_CURSOR, base64.urlsafe_b64encode(b"-5").decode()])
def test_an_overflowing_cursor(api: TestClient, route: str, cursor: str) -> None:
    r = api.get(route, params={"cursor": cursor})
    assert r.status_code == 422, r.text
    assert _details(r)[0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("tag", ["!!binary aGVsbG8=", "!!set {a, b}", "{1: x}"])
def test_yaml_binary_set_and_non_string_keys_in_a_workflow(api: TestClient, tag: str) -> None:
    spec = f"name: w\ndescription: {tag}\nsteps:\n  - name: a\n    task: {{task_type: echo}}\n"
    r = api.post("/v1/workflows", json={"spec": spec})
    assert r.status_code == 422 and _details(r)[0]["loc"] == ["spec"], r.text


def test_5000_deep_nesting_in_validate(api: TestClient) -> None:
    r = api.post("/v1/workflows/validate", json={"spec": "name: w\nsteps: " + "[" * 5000})
    assert r.status_code == 422 and _details(r)[0]["loc"] == ["spec"], r.text
    assert "nested deeper than 64" in r.text


def test_a_100k_term_rule_test(api: TestClient) -> None:
    test = " + ".join(["?x"] * 100_000) + " > 0"
    rules = {"rules": [{"name": "r", "when": [{"f": {"x": "?x"}}, {"test": test}], "then": []}]}
    r = api.put("/v1/rulesets/big", json=rules)
    assert r.status_code == 422 and _details(r)[0]["loc"] == ["rules", 0, "when", 1, "test"]


def test_a_400_level_or(api: TestClient) -> None:
    cond: Any = {"f": {"x": 1}}
    for _ in range(400):
        cond = {"or": [cond, {"f": {"x": 2}}]}
    rules = {"rules": [{"name": "r", "when": [cond], "then": []}]}
    r = api.put("/v1/rulesets/deep", json=rules)
    assert r.status_code == 422, r.text[:300]
    assert _details(r)[0]["loc"][:4] == ["rules", 0, "when", 0]


def test_a_600_deep_model_options(api: TestClient) -> None:
    entry = {"name": "deep", "source": "bundled:all-minilm-l6-v2", "task_types": ["embedding"]}
    r = api.post(
        "/v1/models/registry",
        content=_deep_json({**entry, "options": None}, 600),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text[:300]
    assert _details(r)[0]["loc"][0] == "options"
    assert api.get("/v1/models/registry/deep").status_code == 404


def _deep_json(entry: dict[str, Any], depth: int) -> bytes:
    """``entry`` as JSON with ``options`` nested ``depth`` levels (past json.dumps' recursion)."""
    text = json.dumps(entry)
    nested = '{"o":' * depth + "1" + "}" * depth
    return text.replace('"options": null', f'"options": {nested}').encode()


def test_graph_train_with_a_path_for_a_name_is_refused_at_submit(api: TestClient) -> None:
    task = {
        "task_type": "graph-train",
        "input": {"num_nodes": 2, "edges": [[0, 1]], "features": [[1.0], [0.0]]},
        "params": {"name": "../../x", "epochs": 1},
    }
    r = api.post("/v1/tasks", json=task)
    assert r.status_code == 422, r.text
    assert any(d["loc"][-1] == "name" for d in _details(r)), r.text
    assert api.get("/v1/tasks").json()["tasks"] == []  # nothing was queued, nothing trained


def test_a_control_character_in_workflow_yaml(api: TestClient) -> None:
    # YAML's reader refuses it while the loader is being built, before parsing starts.
    r = api.post("/v1/workflows", json={"spec": "name: a\x1eb\nsteps: []", "inputs": {}})
    assert r.status_code == 422 and _details(r)[0]["loc"] == ["spec"], r.text
