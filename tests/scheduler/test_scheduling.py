"""The scheduler end to end in-process: priorities, aging, deadlines, cancel, retries."""

from __future__ import annotations

import threading
import time

import pytest

from open_autoglm.errors import AdmissionError, ConflictError, NotFoundError, ValidationError


def submit(rt, spec):
    task, _ = rt.submit(spec).result(10)
    return task["id"]


def _until_running(rt, task_id):
    for _ in range(1000):
        if rt.get_task(task_id)["status"] == "running":
            return
        time.sleep(0.01)
    raise AssertionError(f"task {task_id} never started")


def test_priority_under_saturation(make_runtime):
    rt = make_runtime(executor={"cpu": 1, "threads": 2}, scheduler={"aging_s": 600})
    # Both slots busy first, so every job below waits in the queue together. (Comparing a
    # job's start with a high one's created_at raced: created_at is stamped before the
    # commit, and a low job could start in between, before the high one was queued.)
    busy = [
        submit(rt, {"task_type": "sleep", "priority": 5, "params": {"seconds": 1.0}})
        for _ in range(2)
    ]
    low = [
        submit(rt, {"task_type": "sleep", "priority": 1, "params": {"seconds": 0.02}})
        for _ in range(20)
    ]
    high = [
        submit(rt, {"task_type": "sleep", "priority": 9, "params": {"seconds": 0.02}})
        for _ in range(5)
    ]
    all_queued = time.time()
    tasks = {tid: rt.wait(tid, 60) for tid in busy + low + high}
    assert all(t["status"] == "succeeded" for t in tasks.values())
    assert min(tasks[b]["finished_at"] for b in busy) > all_queued, (
        "the test must saturate: every job was to be queued while both slots were busy"
    )
    first_low = min(tasks[lo]["started_at"] for lo in low)
    late = [h for h in high if tasks[h]["started_at"] > first_low]
    assert not late, f"{len(late)} high-priority jobs started after a low one"


def test_timeout_stops_cooperative_thread_task(make_runtime):
    rt = make_runtime()
    task = rt.run({"task_type": "sleep", "params": {"seconds": 30}, "timeout_s": 0.3}, timeout=10)
    assert task["status"] == "failed" and task["error"]["code"] == "timeout"


def test_timeout_kills_process_task(make_runtime, tmp_path):
    rt = make_runtime()
    task = rt.run({"task_type": "killable", "params": {"seconds": 30}, "timeout_s": 2}, timeout=30)
    assert task["status"] == "failed" and task["error"]["code"] == "timeout"
    time.sleep(0.5)
    record = tmp_path / "record.log"
    assert not record.exists() or task["id"] not in record.read_text()  # it never finished


def test_timeout_of_uncooperative_thread_is_forced(make_runtime):
    rt = make_runtime()
    task = rt.run({"task_type": "stubborn", "params": {"seconds": 4}, "timeout_s": 0.2}, timeout=10)
    # The handler ignores cancellation and would return a success after 4 s: a failed
    # timeout means the scheduler forced it (when, is checked on a simulated clock in
    # test_core.py).
    assert task["status"] == "failed" and task["error"]["code"] == "timeout"


def test_cancel_queued_then_running(make_runtime):
    rt = make_runtime(executor={"cpu": 1, "threads": 2})
    running = submit(rt, {"task_type": "sleep", "params": {"seconds": 30}})
    queued = submit(rt, {"task_type": "sleep", "params": {"seconds": 30}})
    _until_running(rt, running)
    assert rt.scheduler.cancel(queued)["status"] == "cancelled"
    rt.scheduler.cancel(running)
    assert rt.wait(running, 10)["status"] == "cancelled"
    assert rt.wait(queued, 10)["status"] == "cancelled"
    with pytest.raises(ConflictError, match="already cancelled"):
        rt.scheduler.cancel(queued)


def test_retries_with_backoff_then_success(make_runtime):
    rt = make_runtime(scheduler={"retry_base_s": 0.05})
    task = rt.run({"task_type": "flaky", "params": {"fail_times": 2}, "max_retries": 3}, timeout=20)
    assert task["status"] == "succeeded" and task["attempts"] == 3
    assert task["result"] == {"runs": 3}
    events = [e["data"] for e in rt.storage.events(task["id"]) if e["kind"] == "status"]
    retries = [e for e in events if e.get("reason") == "retry"]
    assert [r["retry_in_s"] for r in retries] == [0.05, 0.1]  # exponential


def test_retries_exhausted(make_runtime):
    rt = make_runtime(scheduler={"retry_base_s": 0.01})
    task = rt.run({"task_type": "flaky", "params": {"fail_times": 5}, "max_retries": 1}, timeout=20)
    assert task["status"] == "failed" and task["attempts"] == 2
    assert "flaky failure #2" in task["error"]["message"]


def test_idempotency_key_returns_same_task(make_runtime):
    rt = make_runtime()
    spec = {"task_type": "echo", "input": 1, "idempotency_key": "order-42"}
    a, created_a = rt.submit(spec).result(5)
    b, created_b = rt.submit(spec).result(5)
    assert created_a and not created_b and a["id"] == b["id"]
    rt.wait(a["id"], 5)
    c, created_c = rt.submit(spec).result(5)  # after it finished: still the same task
    assert not created_c and c["id"] == a["id"]


def test_concurrent_idempotent_submissions_create_one_task(make_runtime):
    rt = make_runtime()
    ids, barrier = [], threading.Barrier(8)

    def go():
        barrier.wait()
        ids.append(rt.submit({"task_type": "echo", "idempotency_key": "k"}).result(5)[0]["id"])

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert sum(rt.storage.count_by_status().values()) == 1


def test_admission_bound(make_runtime):
    rt = make_runtime(executor={"cpu": 1, "threads": 1}, scheduler={"max_queued": 3})
    first = submit(rt, {"task_type": "sleep", "params": {"seconds": 5}})
    _until_running(rt, first)  # it holds the one slot; the next three wait
    for _ in range(3):
        submit(rt, {"task_type": "sleep", "params": {"seconds": 5}})
    with pytest.raises(AdmissionError) as exc:
        rt.submit({"task_type": "sleep", "params": {"seconds": 5}})
    assert exc.value.retry_after >= 1


def test_progress_events_recorded(make_runtime):
    rt = make_runtime()
    task = rt.run({"task_type": "sleep", "params": {"seconds": 2.2}}, timeout=10)
    progress = [
        e["data"]["fraction"] for e in rt.storage.events(task["id"]) if e["kind"] == "progress"
    ]
    assert progress and progress == sorted(progress) and 0 < progress[-1] <= 1


def test_resources_derived_from_params(make_runtime):
    rt = make_runtime(executor={"cpu": 2})
    from open_autoglm.scheduler.admission import task_shape

    spec = rt.parse(
        {"task_type": "graph-train", "input": {}, "params": {"mode": "sync", "workers": 2}}
    )
    ttype, params = rt.scheduler.prepare(spec)
    assert task_shape(spec, ttype, params)[0] == 2.0
    spec = rt.parse(
        {"task_type": "graph-train", "input": {}, "params": {"mode": "sync", "workers": 3}}
    )
    with pytest.raises(Exception, match="no executor can ever fit"):
        rt.scheduler.prepare(spec)


def test_online_task_is_stored_once_when_it_ends(make_runtime):
    rt = make_runtime(executor={"cpu": 1, "threads": 2})
    task, created = rt.submit(
        {"task_type": "sleep", "params": {"seconds": 0.3}}, durable=False
    ).result(10)
    assert created and task["status"] == "queued"
    # In flight: visible from memory, nothing stored yet (online work is never replayed).
    assert rt.get_task(task["id"])["status"] in ("queued", "running")
    with pytest.raises(Exception, match="not found"):
        rt.storage.get_task(task["id"])
    final = rt.wait(task["id"], 10)
    assert final["status"] == "succeeded"
    stored = rt.storage.get_task(final["id"])
    assert stored["status"] == "succeeded" and stored["durable"] is False
    assert stored["attempts"] == 1 and stored["started_at"] <= stored["finished_at"]
    statuses = [
        e["data"]["status"] for e in rt.storage.events(final["id"]) if e["kind"] == "status"
    ]
    assert statuses == ["queued", "running", "succeeded"]
    assert rt.get_task(final["id"])["result"]["slept"] >= 0.3


def _online(rt, spec):
    task, _ = rt.submit(spec, durable=False).result(10)
    return rt.wait(task["id"], 10)


def test_online_records_are_pruned_after_their_retention(make_runtime):
    rt = make_runtime(storage={"online_retention_s": 1.0, "prune_interval_s": 0.1})
    durable = rt.run({"task_type": "echo", "input": 2}, timeout=10)
    online = _online(rt, {"task_type": "echo", "input": 1})
    assert rt.storage.get_task(online["id"])["durable"] is False  # stored, not yet expired
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            rt.storage.get_task(online["id"])
        except NotFoundError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the online record outlived its retention")
    assert rt.storage.get_result(online["id"]) == (False, None)
    assert rt.storage.events(online["id"]) == []
    assert rt.storage.get_task(durable["id"])["status"] == "succeeded"  # durable: kept
    assert rt.storage.get_result(durable["id"])[0] is True
    pruned = "autoglm_online_records_pruned_total"
    while rt.metrics.registry.get_sample_value(pruned) != 1 and time.monotonic() < deadline:
        time.sleep(0.02)  # counted just after the delete commits
    assert rt.metrics.registry.get_sample_value(pruned) == 1


def test_online_retention_zero_keeps_records(make_runtime):
    rt = make_runtime(storage={"online_retention_s": 0, "prune_interval_s": 0.05})
    online = _online(rt, {"task_type": "echo", "input": 1})
    time.sleep(0.3)
    assert rt.storage.get_task(online["id"])["status"] == "succeeded"
    # On demand, the record goes all the same (the API's and CLI's prune-online).
    with pytest.raises(ValidationError):
        rt.prune_online(-1)
    assert rt.prune_online(3600) == 0
    assert rt.prune_online(0) == 1
    with pytest.raises(NotFoundError):
        rt.storage.get_task(online["id"])
    assert rt.metrics.registry.get_sample_value("autoglm_online_records_pruned_total") == 1


def test_cancelled_online_task_is_stored_cancelled(make_runtime):
    rt = make_runtime(executor={"cpu": 1, "threads": 2})
    blocker, _ = rt.submit({"task_type": "sleep", "params": {"seconds": 0.5}}).result(10)
    queued, _ = rt.submit(
        {"task_type": "echo", "input": 1, "resources": {"cpu": 1}}, durable=False
    ).result(10)
    rt.scheduler.cancel(queued["id"])
    final = rt.wait(queued["id"], 10)
    assert final["status"] == "cancelled"
    assert rt.storage.get_task(queued["id"])["status"] == "cancelled"
    rt.wait(blocker["id"], 10)
