"""POST /v1/tasks/batch: many tasks in one request, all or none."""

from __future__ import annotations

import orjson
from fastapi.testclient import TestClient


def _stored(api: TestClient) -> int:
    return len(api.get("/v1/tasks", params={"limit": 500}).json()["tasks"])


def test_batch_is_accepted_in_order_and_runs(api: TestClient) -> None:
    specs = [{"task_type": "echo", "input": i, "priority": i % 10} for i in range(50)]
    r = api.post("/v1/tasks/batch", json={"tasks": specs})
    assert r.status_code == 202, r.text
    tasks = r.json()["tasks"]
    assert [t["spec"]["input"] for t in tasks] == list(range(50))
    assert all(t["created"] and t["status"] == "queued" for t in tasks)
    runtime = api.app.state.runtime
    results = [runtime.wait(t["id"], 10)["result"] for t in tasks]
    assert results == list(range(50))


def test_one_invalid_spec_rejects_the_batch_naming_each_problem(api: TestClient) -> None:
    before = _stored(api)
    specs = [
        {"task_type": "echo", "input": 1},
        {"task_type": "teleport"},
        {"task_type": "sleep", "params": {"seconds": -1}},
        {"task_type": "echo", "input": 2},
    ]
    r = api.post("/v1/tasks/batch", json={"tasks": specs})
    assert r.status_code == 422
    err = r.json()["error"]
    assert "2 of 4" in err["message"] and "nothing was submitted" in err["message"]
    locs = [d["loc"] for d in err["details"]]
    assert ["tasks", 1, "task_type"] in locs
    assert any(loc[:3] == ["tasks", 2, "params"] for loc in locs)
    assert _stored(api) == before


def test_batch_body_shape_and_size_are_checked(api: TestClient) -> None:
    before = _stored(api)
    cases = [
        ({"tasks": []}, "non-empty"),
        ({"tasks": {"task_type": "echo"}}, "non-empty list"),
        ([{"task_type": "echo"}], "one field, tasks"),
        ({"tasks": [{"task_type": "echo"}], "extra": 1}, "one field, tasks"),
        ({"tasks": [{"task_type": "echo", "input": i} for i in range(1001)]}, "at most 1000"),
    ]
    for body, expected in cases:
        r = api.post(
            "/v1/tasks/batch",
            content=orjson.dumps(body),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, (body, r.text)
        assert expected in r.json()["error"]["message"], r.text
    assert _stored(api) == before


def test_batch_that_does_not_fit_the_queue_is_refused_whole(api: TestClient) -> None:
    runtime = api.app.state.runtime
    runtime.scheduler.max_queued = 5
    before = _stored(api)
    r = api.post("/v1/tasks/batch", json={"tasks": [{"task_type": "echo"}] * 6})
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert "6 tasks do not fit" in r.json()["error"]["message"]
    assert _stored(api) == before
