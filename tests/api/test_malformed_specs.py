"""Malformed task specs: each gets a 4xx naming the problem, and nothing is stored."""

from __future__ import annotations

import orjson
import pytest

DEEP: object = "x"
for _ in range(60):
    DEEP = {"a": DEEP}

CASES = [
    # (name, raw body, expected status, text that must appear in loc or msg)
    ("empty body", b"", 422, "body"),
    ("whitespace body", b"   ", 422, "body"),
    ("not json", b"{task_type: echo}", 422, "invalid JSON"),
    ("truncated json", b'{"task_type": "echo"', 422, "invalid JSON"),
    ("json array", b"[1, 2]", 422, "expected an object"),
    ("json string", b'"echo"', 422, "expected an object"),
    ("empty object", b"{}", 422, "task_type"),
    ("missing task_type", orjson.dumps({"input": "x"}), 422, "task_type"),
    ("task_type wrong type", orjson.dumps({"task_type": 5}), 422, "task_type"),
    (
        "unknown task type",
        orjson.dumps({"task_type": "teleport"}),
        422,
        "unknown task type 'teleport'",
    ),
    (
        "unknown top-level field",
        orjson.dumps({"task_type": "echo", "colour": "red"}),
        422,
        "unknown field 'colour'",
    ),
    (
        "unknown field for type",
        orjson.dumps({"task_type": "echo", "seconds": 3}),
        422,
        "unknown field 'seconds'",
    ),
    ("priority too high", orjson.dumps({"task_type": "echo", "priority": 10}), 422, "priority"),
    ("priority negative", orjson.dumps({"task_type": "echo", "priority": -1}), 422, "priority"),
    (
        "priority bad name",
        orjson.dumps({"task_type": "echo", "priority": "urgent"}),
        422,
        "unknown priority name",
    ),
    ("priority boolean", orjson.dumps({"task_type": "echo", "priority": True}), 422, "priority"),
    (
        "negative sleep",
        orjson.dumps({"task_type": "sleep", "params": {"seconds": -1}}),
        422,
        "seconds",
    ),
    (
        "sleep seconds wrong type",
        orjson.dumps({"task_type": "sleep", "seconds": "long"}),
        422,
        "seconds",
    ),
    ("params not object", orjson.dumps({"task_type": "sleep", "params": [1]}), 422, "params"),
    ("negative timeout", orjson.dumps({"task_type": "echo", "timeout_s": -5}), 422, "timeout_s"),
    (
        "negative max_retries",
        orjson.dumps({"task_type": "echo", "max_retries": -1}),
        422,
        "max_retries",
    ),
    (
        "resources negative cpu",
        orjson.dumps({"task_type": "echo", "resources": {"cpu": -1}}),
        422,
        "cpu",
    ),
    (
        "resources unknown key",
        orjson.dumps({"task_type": "echo", "resources": {"tpu": 1}}),
        422,
        "tpu",
    ),
    (
        "resources never fit",
        orjson.dumps({"task_type": "echo", "resources": {"gpu": 4}}),
        422,
        "no executor can ever fit",
    ),
    (
        "input and inputs",
        orjson.dumps({"task_type": "echo", "input": 1, "inputs": [1]}),
        422,
        "either 'input' or 'inputs'",
    ),
    ("inputs not list", orjson.dumps({"task_type": "echo", "inputs": "abc"}), 422, "inputs"),
    ("model bad chars", orjson.dumps({"task_type": "echo", "model": "a b;c"}), 422, "model"),
    ("metadata not object", orjson.dumps({"task_type": "echo", "metadata": 3}), 422, "metadata"),
    ("deeply nested input", orjson.dumps({"task_type": "echo", "input": DEEP}), 422, "nest"),
    (
        "oversized body",
        orjson.dumps({"task_type": "echo", "input": "x" * (11 * 1024 * 1024)}),
        413,
        "exceeds",
    ),
    (
        "idempotency key empty",
        orjson.dumps({"task_type": "echo", "idempotency_key": ""}),
        422,
        "idempotency_key",
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "needle"), CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_rejected_and_not_stored(api, name, body, status, needle):
    resp = api.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) >= {"code", "message", "details"}
    described = err["message"] + " " + " ".join(f"{d['loc']} {d['msg']}" for d in err["details"])
    assert needle in described, described
    listed = api.get("/v1/tasks").json()["tasks"]
    assert listed == [], f"{name}: a rejected spec was stored"


def test_malformed_count_meets_the_bar():
    assert len(CASES) >= 20


def test_infer_rejects_the_same_way(api):
    resp = api.post("/v1/infer", json={"task_type": "echo", "bogus": 1})
    assert resp.status_code == 422
    assert resp.json()["error"]["details"][0]["loc"] == ["bogus"]


def test_spec_and_params_problems_are_reported_together(api):
    resp = api.post("/v1/tasks", json={"task_type": "sleep", "seconds": -1, "colour": "red"})
    assert resp.status_code == 422
    locs = [d["loc"] for d in resp.json()["error"]["details"]]
    assert ["colour"] in locs and ["params", "seconds"] in locs
