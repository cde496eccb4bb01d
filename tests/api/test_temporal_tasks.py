"""temporal-train / temporal-predict through the whole platform: a CollegeMsg slice trained
as a job in a killable subprocess, predictions through /v1/infer, and an appended event that
changes the next prediction without retraining."""

from __future__ import annotations

from helpers.paths import SHARED_DATA
from helpers.polling import wait_task


def _college_slice(n: int) -> list[list[int]]:
    lines = (SHARED_DATA / "temporal" / "CollegeMsg.txt").read_text().splitlines()[:n]
    return [[int(v) for v in line.split()] for line in lines]


def test_train_job_predict_online_and_append_changes_the_next_prediction(api):
    events = _college_slice(600)
    resp = api.post(
        "/v1/tasks",
        json={
            "task_type": "temporal-train",
            "input": {"events": events},
            "params": {"kind": "tgat", "epochs": 2, "dim": 16, "time_dim": 16, "name": "college"},
            "timeout_s": 300,
        },
    )
    assert resp.status_code == 202, resp.text
    task = wait_task(api, resp.json()["id"])
    assert task["status"] == "succeeded", task["error"]
    result = task["result"]
    assert result["registered"] == "college" and result["epochs_run"] == 2
    assert 0.0 <= result["metrics"]["test_transductive_random_ap"] <= 1.0
    assert {"weights", "meta", "events", "id_map", "curves"} <= set(result["artifacts"])
    png = api.get(f"/v1/artifacts/{result['artifacts']['curves']}/content")
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    progress = [
        e for e in api.get(f"/v1/tasks/{task['id']}/events").json()["events"]
        if e["kind"] == "progress"
    ]  # fmt: skip
    assert len(progress) >= 2
    assert {"loss", "val_ap", "events_per_s"} <= set(progress[-1]["data"])
    entry = api.get("/v1/models/registry/college").json()
    assert entry["backend"] == "temporal" and entry["task_types"] == ["temporal-predict"]

    last_t = events[-1][2]
    src, dst = events[-1][0], events[-2][1]
    query = {
        "links": [{"src": src, "dst": dst, "t": last_t + 100}],
        "top_k": [{"src": src, "t": last_t + 100, "k": 5}],
    }
    first = api.post(
        "/v1/infer", json={"task_type": "temporal-predict", "model": "college", "params": query}
    )
    assert first.status_code == 200, first.text
    before = first.json()["result"]
    p0 = before["links"][0]["probability"]
    assert 0.0 <= p0 <= 1.0 and len(before["top_k"][0]["destinations"]) == 5

    by_meta = api.post(  # the meta artifact alone (no registry) answers the same
        "/v1/infer",
        json={
            "task_type": "temporal-predict",
            "params": {"meta": result["artifacts"]["meta"], "links": query["links"]},
        },
    )
    assert by_meta.status_code == 200, by_meta.text
    assert by_meta.json()["result"]["links"][0]["probability"] == p0

    appended = api.post(
        "/v1/infer",
        json={
            "task_type": "temporal-predict",
            "model": "college",
            "params": {"append": [[src, dst, last_t + 50], [dst, src, last_t + 60]], **query},
        },
    )
    assert appended.status_code == 200, appended.text
    after = appended.json()["result"]
    assert after["appended"] == 2 and after["events_in_store"] == before["events_in_store"] + 2
    assert after["links"][0]["probability"] != p0
    unknown = api.post(
        "/v1/infer",
        json={
            "task_type": "temporal-predict",
            "model": "college",
            "params": {"links": [{"src": src, "dst": "nobody", "t": last_t}]},
        },
    )
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["error"]["details"][0]["loc"] == ["links", 0]
    # the registry now points at the grown store: a plain query sees the appended events too
    again = api.post(
        "/v1/infer", json={"task_type": "temporal-predict", "model": "college", "params": query}
    )
    assert again.json()["result"]["links"][0]["probability"] == after["links"][0]["probability"]


def test_invalid_stream_and_queries_are_rejected_with_locations(api):
    bad = {"events": [[1, 2, "noon"], [1, 2, 5], [3, 4]]}
    task = wait_task(
        api, api.post("/v1/tasks", json={"task_type": "temporal-train", "input": bad}).json()["id"]
    )
    assert task["status"] == "failed" and task["error"]["code"] == "validation_error"
    locs = {tuple(d["loc"]) for d in task["error"]["details"]}
    assert ("events", 0, "t") in locs and ("events", 2) in locs
    resp = api.post(
        "/v1/tasks",
        json={"task_type": "temporal-train", "input": {"events": []}, "params": {"kind": "gcn"}},
    )
    assert resp.status_code == 422 and "kind" in resp.text


def test_ranks_and_bf16_are_refused_with_the_reason(api):
    def submit(kind: str, distributed: dict) -> dict:
        resp = api.post(
            "/v1/tasks",
            json={
                "task_type": "temporal-train",
                "input": {"events": _college_slice(40)},
                "params": {"kind": kind, "distributed": distributed},
            },
        )
        assert resp.status_code == 422, resp.text
        return resp.json()

    tgn = submit("tgn", {"strategy": "ddp", "world_size": 2})
    assert "distributed" in str(tgn) and "TGN's node memory" in str(tgn)
    assert "TGAT's negatives" in str(submit("tgat", {"strategy": "fsdp", "world_size": 2}))
    assert "fp32" in str(submit("tgat", {"precision": "bf16"}))
    # the default block is accepted: strategy none, one process, fp32
    resp = api.post(
        "/v1/tasks",
        json={
            "task_type": "temporal-train",
            "input": {"events": _college_slice(40)},
            "params": {"kind": "edgebank", "distributed": {"strategy": "none"}},
        },
    )
    assert resp.status_code in (200, 201, 202), resp.text
    assert wait_task(api, resp.json()["id"])["status"] == "succeeded"
