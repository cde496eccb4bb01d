"""Online work has reserved room: a prediction does not wait behind training for a CPU.

Two long ``graph-train`` jobs hold both CPUs of the executor; a ``graph-predict`` through
``/v1/infer`` still starts at once (in the CPU reserved for online work) and answers while
both jobs are running.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from helpers.graphs import community_graph
from helpers.polling import wait_task
from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.runtime import Runtime


@pytest.fixture
def api(tmp_path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "data", executor={"cpu": 2}, scheduler={"online_reserve_cpu": 1.0}
    )
    with TestClient(create_app(runtime=Runtime(settings))) as client:
        yield client


def _train(api: TestClient, graph: dict, name: str, epochs: int) -> str:
    params = {"kind": "sage", "hidden": 8, "epochs": epochs, "name": name}
    body = {"task_type": "graph-train", "input": graph, "params": params, "timeout_s": 300}
    resp = api.post("/v1/tasks", json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def test_prediction_answers_while_two_trainings_hold_the_cpus(api: TestClient) -> None:
    graph = community_graph(n_per_class=10, classes=2, dim=4, seed=5)
    model = _train(api, graph, "reserve-demo", epochs=5)
    assert wait_task(api, model)["status"] == "succeeded"
    predict = {
        "task_type": "graph-predict",
        "model": "reserve-demo",
        "params": {"node_ids": graph["nodes"][:3]},
    }
    assert api.post("/v1/infer", json=predict).status_code == 200  # the model is loaded

    long_jobs = [_train(api, graph, f"long-{i}", epochs=100_000) for i in range(2)]
    for tid in long_jobs:
        wait_task(api, tid, until=("running",), interval=0.05)
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.scheduler.stats()["utilization"]["local"]["cpu"] == 1.0  # no job slot left

    resp = api.post("/v1/infer", json=predict)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["result"]["predictions"]) == 3
    answered = wait_task(api, resp.json()["id"])
    assert answered["status"] == "succeeded" and answered["finished_at"] is not None
    # It did not wait for a job to end: the jobs never end on their own (100 000 epochs), and
    # after the prediction finished both still run, never having finished, holding their CPUs.
    # Nothing else frees a CPU, so it can only have run in the reserved one.
    jobs = [api.get(f"/v1/tasks/{t}").json() for t in long_jobs]
    assert [(j["status"], j["finished_at"]) for j in jobs] == [("running", None)] * 2
    assert runtime.scheduler.stats()["utilization"]["local"]["cpu"] == 1.0
    for tid in long_jobs:
        api.post(f"/v1/tasks/{tid}/cancel")
        assert wait_task(api, tid)["status"] == "cancelled"
