"""Workflow routes on a real runtime: steps run as scheduler tasks, state is stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def wait_run(api: TestClient, run_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/v1/workflows/runs/{run_id}").json()
        if run["status"] in TERMINAL:
            return run
        time.sleep(0.03)
    raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")


def wait_step(api: TestClient, run_id: str, step: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        run = api.get(f"/v1/workflows/runs/{run_id}").json()
        s = _step(run, step)
        if s["instances"] and s["instances"][0]["status"] == status:
            return run
        time.sleep(0.03)
    raise AssertionError(f"step {step} never reached {status}")


def _step(run: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["name"] == name)


def _start(api: TestClient, spec: Any, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = api.post("/v1/workflows", json={"spec": spec, "inputs": inputs or {}})
    assert resp.status_code == 202, resp.text
    assert resp.headers["location"] == f"/v1/workflows/runs/{resp.json()['id']}"
    return resp.json()


def test_example_pipeline_runs_through_the_scheduler(api: TestClient) -> None:
    text = (EXAMPLES / "order_screening.yaml").read_text()
    orders = [
        {"id": "a1", "amount": 40, "country": "fr"},
        {"id": "b2", "amount": 2500, "country": "us"},
        {"id": "c3", "amount": 10, "country": "xx"},
    ]
    flagged = wait_run(api, _start(api, text, {"orders": orders, "review_s": 0.05})["id"])
    assert flagged["status"] == "succeeded", flagged
    assert flagged["outputs"]["flagged"] == 2
    assert _step(flagged, "hold_for_review")["status"] == "succeeded"
    assert flagged["outputs"]["report"]["held"] is True
    normalize = _step(flagged, "normalize")
    assert [i["output"]["country"] for i in normalize["instances"]] == ["FR", "US", "XX"]
    # Every step ran as a real task, tagged with its run and step, retried by the engine only.
    for inst in normalize["instances"]:
        task = api.get(f"/v1/tasks/{inst['task_id']}").json()
        assert task["status"] == "succeeded"
        assert task["spec"]["metadata"]["workflow_run"] == flagged["id"]
        assert task["spec"]["metadata"]["workflow_step"] == inst["id"]
        assert task["max_retries"] == 0

    clean = wait_run(api, _start(api, text, {"orders": orders[:1]})["id"])
    assert clean["status"] == "succeeded"
    hold = _step(clean, "hold_for_review")
    assert hold["status"] == "skipped"
    assert hold["skip_reason"].startswith("condition false")
    assert hold["instances"] == [] and hold.get("task_id") is None
    assert clean["outputs"]["report"] == {"orders": 1, "flagged": [], "held": False}


def test_invalid_spec_is_422_with_every_problem_and_nothing_stored(api: TestClient) -> None:
    spec = {
        "name": "broken",
        "steps": [
            {"name": "a", "depends_on": ["b"], "task": {"task_type": "nope"}},
            {"name": "b", "depends_on": ["a"], "task": {"task_type": "echo"}},
            {"name": "c", "task": {"task_type": "sleep", "params": {"seconds": "long"}}},
            {"name": "d", "task": {"task_type": "sleep", "params": {"seconds": "${inputs.x}"}}},
        ],
    }
    resp = api.post("/v1/workflows", json={"spec": spec})
    assert resp.status_code == 422
    msgs = [d["msg"] for d in resp.json()["error"]["details"]]
    assert any("unknown task type 'nope'" in m for m in msgs), msgs
    assert any("dependency cycle" in m for m in msgs), msgs
    assert any("'c'" in m and "number" in m for m in msgs), msgs  # core TaskSpec check
    assert any("unknown input 'x'" in m for m in msgs), msgs  # a reference is not a number error
    assert not any("'d'" in m and "number" in m for m in msgs), msgs
    assert api.get("/v1/workflows/runs").json()["runs"] == []

    bad_inputs = api.post(
        "/v1/workflows",
        json={"spec": (EXAMPLES / "order_screening.yaml").read_text(), "inputs": {"orders": 3}},
    )
    assert bad_inputs.status_code == 422
    assert "must be a list" in bad_inputs.text
    assert api.get("/v1/workflows/runs").json()["runs"] == []


def test_validate_route(api: TestClient) -> None:
    ok = api.post(
        "/v1/workflows/validate", json={"spec": (EXAMPLES / "order_screening.yaml").read_text()}
    )
    assert ok.status_code == 200
    assert ok.json()["steps"] == ["normalize", "screen", "hold_for_review", "report"]
    bad = api.post(
        "/v1/workflows/validate",
        json={"spec": "name: x\nsteps:\n  - {name: a, task: {task_type: echo}, when: 'a ==' }\n"},
    )
    assert bad.status_code == 422
    assert "bad condition" in bad.json()["error"]["details"][0]["msg"]
    assert api.get("/v1/workflows/runs").json()["runs"] == []


def test_cancel_stops_the_running_step_task(api: TestClient) -> None:
    spec = {
        "name": "long",
        "steps": [
            {"name": "wait", "task": {"task_type": "sleep", "params": {"seconds": 30}}},
            {"name": "after", "depends_on": ["wait"], "task": {"task_type": "echo"}},
        ],
    }
    run_id = _start(api, spec)["id"]
    run = wait_step(api, run_id, "wait", "running")
    task_id = _step(run, "wait")["task_id"]
    resp = api.post(f"/v1/workflows/runs/{run_id}/cancel")
    assert resp.status_code == 200
    assert resp.json()["status"] == "cancelled"
    # Its outcome says it was stopped: a task that slept its 30 s out would have succeeded.
    deadline = time.monotonic() + 60
    while (status := api.get(f"/v1/tasks/{task_id}").json()["status"]) not in TERMINAL:
        assert time.monotonic() < deadline, "the step task never ended"
        time.sleep(0.03)
    assert status == "cancelled"
    run = api.get(f"/v1/workflows/runs/{run_id}").json()
    assert [s["status"] for s in run["steps"]] == ["cancelled", "cancelled"]
    again = api.post(f"/v1/workflows/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert api.post("/v1/workflows/runs/nope/cancel").status_code == 404


def test_engine_retries_are_new_tasks_and_failure_is_reported(api: TestClient) -> None:
    spec = {
        "name": "flaky_run",
        "steps": [
            {
                "name": "shaky",
                "retries": {"max_retries": 1, "backoff_s": 0.01},
                "task": {"task_type": "flaky", "params": {"fail_times": 5}},
            },
            {"name": "never", "depends_on": ["shaky"], "task": {"task_type": "echo"}},
        ],
    }
    run = wait_run(api, _start(api, spec)["id"])
    assert run["status"] == "failed"
    shaky = _step(run, "shaky")
    assert shaky["status"] == "failed" and "flaky failure" in shaky["error"]
    inst = shaky["instances"][0]
    assert inst["attempts"] == 2
    assert [t["attempt"] for t in inst["tasks"]] == [1, 2]
    assert len({t["task_id"] for t in inst["tasks"]}) == 2
    never = _step(run, "never")
    assert never["status"] == "skipped" and never["skip_reason"] == "upstream 'shaky' failed"
    assert "shaky" in run["error"]


def test_a_step_whose_handler_says_not_retryable_is_not_retried(api: TestClient) -> None:
    # TaskFailedError(retryable=False) from the handler: the step's retry policy must not
    # second-guess it (its error code, task_failed, would look transient).
    spec = {
        "name": "permanent",
        "steps": [
            {
                "name": "bad",
                "retries": {"max_retries": 3, "backoff_s": 0.01},
                "task": {"task_type": "double", "input": "fail"},
            }
        ],
    }
    run = wait_run(api, _start(api, spec)["id"])
    assert run["status"] == "failed"
    bad = _step(run, "bad")
    assert bad["instances"][0]["attempts"] == 1
    task_id = bad["instances"][0]["tasks"][0]["task_id"]
    error = api.get(f"/v1/tasks/{task_id}").json()["error"]
    assert error["code"] == "task_failed" and error["retryable"] is False


def test_list_filters_and_events_as_json_and_sse(api: TestClient) -> None:
    one = {"name": "one", "steps": [{"name": "a", "task": {"task_type": "echo", "input": 1}}]}
    two = {"name": "two", "steps": [{"name": "a", "task": {"task_type": "echo", "input": 2}}]}
    ids = [_start(api, one)["id"], _start(api, two)["id"], _start(api, one)["id"]]
    for rid in ids:
        wait_run(api, rid)
    runs = api.get("/v1/workflows/runs").json()["runs"]
    assert [r["id"] for r in runs] == ids[::-1]
    assert [r["id"] for r in api.get("/v1/workflows/runs?name=one").json()["runs"]] == [
        ids[2],
        ids[0],
    ]
    page = api.get("/v1/workflows/runs?limit=2").json()
    assert len(page["runs"]) == 2 and page["next_cursor"]
    rest = api.get(f"/v1/workflows/runs?limit=2&cursor={page['next_cursor']}").json()
    assert [r["id"] for r in rest["runs"]] == [ids[0]] and rest["next_cursor"] is None
    assert api.get("/v1/workflows/runs?status=failed").json()["runs"] == []
    assert api.get("/v1/workflows/runs/nope").status_code == 404

    events = api.get(f"/v1/workflows/runs/{ids[0]}/events").json()["events"]
    kinds = [(e["kind"], e["data"].get("status")) for e in events]
    assert kinds[0] == ("run", "running")
    assert kinds[-1] == ("run", "succeeded")
    assert ("instance", "submitted") in kinds and ("step", "succeeded") in kinds

    # SSE: a live run, streamed until its end.
    slow = {"name": "slow", "steps": [{"name": "s", "task": {"task_type": "sleep", "params": {"seconds": 0.3}}}]}  # fmt: skip
    rid = _start(api, slow)["id"]
    seen: list[tuple[str, dict[str, Any]]] = []
    with api.stream(
        "GET", f"/v1/workflows/runs/{rid}/events", headers={"accept": "text/event-stream"}
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in resp.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                seen.append((kind, orjson.loads(line[6:])))
    assert seen[-1][0] == "end"
    assert (seen[-2][0], seen[-2][1]["status"]) == ("run", "succeeded")
    assert ("instance", "running") in [(k, d.get("status")) for k, d in seen]


def test_docs_workflow_example_runs(api: TestClient) -> None:
    import yaml

    page = (EXAMPLES.parents[1] / "docs" / "workflows.md").read_text()
    doc = yaml.safe_load(page.split("```yaml", 1)[1].split("```", 1)[0])
    doc.pop("callback_url")  # example.com is not reachable from the tests
    orders = [{"id": "a", "amount": 5}, {"id": "b", "amount": 5000}]
    run = wait_run(api, _start(api, doc, {"orders": orders})["id"])
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"flagged": 1}
    assert _step(run, "report")["output"] == {"held": True}


def test_nested_workflow_fanned_out_runs_as_tasks(api: TestClient) -> None:
    spec = {
        "name": "outer",
        "inputs": {"words": {"type": "list"}},
        "steps": [
            {
                "name": "each",
                "map": "inputs.words",
                "inputs": {"word": "${item}"},
                "workflow": {
                    "name": "inner",
                    "inputs": {"word": {"type": "string"}},
                    "steps": [
                        {
                            "name": "up",
                            "task": {"task_type": "echo", "input": "${upper(inputs.word)}"},
                        },
                        {
                            "name": "wrap",
                            "depends_on": ["up"],
                            "task": {"task_type": "echo", "input": {"w": "${steps.up.output}"}},
                        },
                    ],
                    "outputs": {"w": "${steps.wrap.output.w}"},
                },
            }
        ],
        "outputs": {"words": "${steps.each.output}"},
    }
    run = wait_run(api, _start(api, spec, {"words": ["a", "b"]})["id"])
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"words": [{"w": "A"}, {"w": "B"}]}
    inner = _step(run, "each")["instances"][1]["run"]["steps"]
    assert [s["id"] for s in inner] == ["each[1]/up", "each[1]/wrap"]
    task = api.get(f"/v1/tasks/{inner[1]['task_id']}").json()
    assert task["spec"]["metadata"]["workflow_step"] == "each[1]/wrap"
    assert task["result"] == {"w": "B"}


def test_nested_step_retry_runs_again_and_then_fails(api: TestClient, tmp_path: Path) -> None:
    # Each attempt's inner task is a new task, so it fails once more: retries run out.
    spec = {
        "name": "outer",
        "steps": [
            {
                "name": "sub",
                "retries": {"max_retries": 1, "backoff_s": 0.05},
                "workflow": {
                    "name": "inner",
                    "steps": [
                        {
                            "name": "gen",
                            "task": {"task_type": "flaky", "params": {"fail_times": 1}},
                        }
                    ],
                },
            }
        ],
    }
    run = wait_run(api, _start(api, spec)["id"])
    assert run["status"] == "failed", run
    sub = _step(run, "sub")
    assert sub["instances"][0]["attempts"] == 2
    assert sub["instances"][0]["run"]["steps"][0]["id"] == "sub@2/gen"
    assert sub["status"] == "failed"
    assert "flaky failure #1" in run["error"]
    assert len((tmp_path / "record.log").read_text().splitlines()) == 2  # the retry ran


def test_a_step_naming_a_missing_model_fails_at_once_saying_so_once(api: TestClient) -> None:
    spec = {
        "name": "ghostly",
        "steps": [
            {
                "name": "gen",
                "task": {"task_type": "text-generation", "model": "ghost", "input": "x"},
            }
        ],
    }
    run = wait_run(api, _start(api, spec)["id"])
    assert run["status"] == "failed"
    assert run["error"].count("model 'ghost' is not registered") == 1, run["error"]
