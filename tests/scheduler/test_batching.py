"""Dynamic batching through the scheduler (the `double` test task type has a batch handler)."""

from __future__ import annotations

import pytest


@pytest.fixture
def rt(make_runtime, tmp_path):
    runtime = make_runtime(executor={"cpu": 1, "threads": 2}, scheduler={"aging_s": 600})
    runtime.record = tmp_path / "record.log"
    return runtime


def batches(rt) -> list[list[str]]:
    lines = rt.record.read_text().splitlines() if rt.record.exists() else []
    return [line.split()[1:] for line in lines if line.startswith("batch ")]


def occupy(rt, seconds=0.5) -> str:
    task, _ = rt.submit({"task_type": "sleep", "params": {"seconds": seconds}}).result(5)
    return task["id"]


def test_queued_tasks_of_one_group_run_as_batches(rt):
    rt.scheduler.batch_policy = lambda task_type, model: (8, 0.0)
    occupy(rt)
    futs = [rt.submit_tracked({"task_type": "double", "input": i}) for i in range(20)]
    other = [
        rt.submit_tracked({"task_type": "double", "input": i, "params": {"mode": "x"}})
        for i in range(3)
    ]
    results = [f.result(20) for f in futs + other]
    assert [r["result"] for r in results] == [i * 2 for i in range(20)] + [0, 2, 4]
    sizes = [len(b) for b in batches(rt)]
    assert max(sizes) == 8 and sum(sizes) == 23
    ids_by_group = {r["id"]: ("x" if i >= 20 else "double") for i, r in enumerate(results)}
    for b in batches(rt):  # a batch never mixes groups (batch_key = mode)
        assert len({ids_by_group[t] for t in b}) == 1


def test_batch_is_filled_highest_priority_first(rt):
    rt.scheduler.batch_policy = lambda task_type, model: (4, 0.0)
    occupy(rt)
    low = [rt.submit_tracked({"task_type": "double", "input": 1, "priority": 1}) for _ in range(10)]
    high = [rt.submit_tracked({"task_type": "double", "input": 1, "priority": 9}) for _ in range(4)]
    high_ids = {f.result(20)["id"] for f in high}
    for f in low:
        f.result(20)
    assert set(batches(rt)[0]) == high_ids


def test_max_wait_holds_a_small_group_then_runs_it(rt):
    rt.scheduler.batch_policy = lambda task_type, model: (64, 0.3)
    futs = [rt.submit_tracked({"task_type": "double", "input": i}) for i in range(5)]
    assert [f.result(10)["result"] for f in futs] == [0, 2, 4, 6, 8]
    assert [len(b) for b in batches(rt)] == [5]  # it waited for the batch to fill


def test_one_bad_item_fails_alone(rt):
    rt.scheduler.batch_policy = lambda task_type, model: (8, 0.0)
    occupy(rt, 0.3)
    futs = [rt.submit_tracked({"task_type": "double", "input": x}) for x in (1, "fail", 3)]
    done = [f.result(10) for f in futs]
    assert [d["status"] for d in done] == ["succeeded", "failed", "succeeded"]
    assert done[1]["error"]["message"] == "bad item"
    assert len(batches(rt)[0]) == 3
