"""The storage hub on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import time

import pytest

from open_autoglm.errors import ConflictError, NotFoundError, ValidationError
from open_autoglm.storage.hub import StorageHub, TaskWrite
from open_autoglm.storage.writer import FENCED


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("pg_db")
    h = StorageHub(url, tmp_path).open()
    yield h
    h.close()


def row(tid: str, key: str | None = None) -> dict:
    return {
        "id": tid,
        "task_type": "echo",
        "model": None,
        "status": "queued",
        "priority": 5,
        "spec": {"task_type": "echo"},
        "idempotency_key": key,
        "attempts": 0,
        "max_retries": 0,
        "created_at": time.time(),
    }


def test_insert_update_result_events(hub):
    futs = [
        hub.write(
            TaskWrite(
                task_id=f"t{i}", row=row(f"t{i}"), events=[(1.0, "status", {"status": "queued"})]
            )
        )
        for i in range(50)
    ]
    assert [f.result(10) for f in futs][3] == ("t3", True)
    hub.write(TaskWrite(task_id="t3", fields={"status": "running", "attempts": 1})).result(10)
    hub.write(
        TaskWrite(
            task_id="t3",
            fields={"status": "succeeded", "finished_at": 2.0},
            terminal=True,
            result={"x": [1, 2]},
            has_result=True,
        )
    ).result(10)
    task = hub.get_task("t3")
    assert task["status"] == "succeeded" and task["attempts"] == 1
    assert hub.get_result("t3") == (True, {"x": [1, 2]})
    assert hub.count_by_status() == {"queued": 49, "succeeded": 1}
    assert [e["data"]["status"] for e in hub.events("t3")] == ["queued"]


def test_terminal_state_written_once(hub):
    hub.write(TaskWrite(task_id="a", row=row("a"))).result(10)
    hub.write(
        TaskWrite(
            task_id="a", fields={"status": "succeeded"}, terminal=True, result=1, has_result=True
        )
    ).result(10)
    hub.write(
        TaskWrite(
            task_id="a", fields={"status": "failed"}, terminal=True, result=2, has_result=True
        )
    ).result(10)
    assert hub.get_task("a")["status"] == "succeeded"
    assert hub.get_result("a") == (True, 1)


def test_writes_for_a_task_another_replica_owns_are_fenced(hub):
    hub.write(TaskWrite(task_id="a", row={**row("a"), "owner": "r1"})).result(10)
    hub.write(TaskWrite(task_id="b", row={**row("b"), "owner": "r1"})).result(10)
    late = TaskWrite(
        task_id="a",
        fields={"status": "succeeded"},
        terminal=True,
        events=[(2.0, "status", {"status": "succeeded"})],
        result=1,
        has_result=True,
        owner="r2",  # r2 lost "a" to r1
    )
    mine = TaskWrite(
        task_id="b",
        fields={"status": "running"},
        events=[(2.0, "status", {"status": "running"})],
        owner="r1",
    )
    progress = TaskWrite(task_id="a", events=[(3.0, "progress", {"step": 1})], owner="r2")
    # One transaction: the fenced writes are dropped whole, the owner's go through.
    assert hub.write_many([late, mine, progress]).result(10) == [FENCED, None, FENCED]
    assert hub.get_task("a")["status"] == "queued"
    assert hub.get_result("a")[0] is False
    assert hub.events("a") == []
    assert hub.get_task("b")["status"] == "running"
    assert [e["data"]["status"] for e in hub.events("b")] == ["running"]
    # An insert is never fenced: the row it creates names its owner.
    new = TaskWrite(task_id="c", row={**row("c"), "owner": "r2"}, owner="r2")
    assert hub.write(new).result(10) == ("c", True)


def test_idempotency_key_resolves_to_existing(hub):
    first = hub.write(TaskWrite(task_id="a", row=row("a", key="k"))).result(10)
    second = hub.write(TaskWrite(task_id="b", row=row("b", key="k"))).result(10)
    assert first == ("a", True) and second == ("a", False)
    with pytest.raises(NotFoundError):
        hub.get_task("b")


def test_one_bad_write_fails_alone(hub):
    good = hub.write(TaskWrite(task_id="g", row=row("g")))
    bad = hub.write(TaskWrite(task_id="x", row={**row("x"), "priority": None}))  # NOT NULL
    assert good.result(10) == ("g", True)
    with pytest.raises(Exception):  # noqa: B017 - the driver's integrity error, wrapped
        bad.result(10)
    assert hub.get_task("g")["status"] == "queued"


def test_log_writes_wait_for_company_but_never_hold_up_a_write_someone_waits_on(hub):
    # Online tasks' records are logged lazily: a batch of only such writes lingers (here up
    # to 30 s, so any early commit below is caused by the code, not by the clock).
    hub.writer._log_linger_s = 30.0
    batches = hub.writer.batches
    logs = [hub.write(TaskWrite(task_id=f"l{i}", row=row(f"l{i}")), lazy=True) for i in range(3)]
    time.sleep(0.2)
    assert not any(f.done() for f in logs)  # still gathering
    logs.append(hub.write_many([TaskWrite(task_id="l3", row=row("l3"))], lazy=True))
    start = time.monotonic()
    urgent = hub.write(TaskWrite(task_id="u", row=row("u")))  # the API waits on this one
    assert urgent.result(25) == ("u", True)
    assert time.monotonic() - start < 25  # not held for the 30 s linger
    assert [f.result(0) for f in logs[:3]] == [(f"l{i}", True) for i in range(3)]
    assert logs[3].result(0) == [("l3", True)]
    assert hub.writer.batches - batches <= 2  # the log writes rode along, not one commit each
    # Closing flushes what lingers, at once.
    last = hub.write(TaskWrite(task_id="l4", row=row("l4")), lazy=True)
    start = time.monotonic()
    hub.writer.close()
    assert last.result(0) == ("l4", True) and time.monotonic() - start < 25  # not the linger
    assert hub.get_task("l4")["status"] == "queued"


def test_pagination_cursor(hub):
    for i in range(5):
        hub.write(TaskWrite(task_id=f"p{i}", row=row(f"p{i}"))).result(10)
    page1 = hub.list_tasks(limit=2)
    page2 = hub.list_tasks(limit=2, after_seq=page1[-1]["seq"])
    assert [t["id"] for t in page1 + page2] == ["p4", "p3", "p2", "p1"]


def test_artifacts_content_addressed(hub):
    a = hub.put_artifact(b"weights", media_type="application/octet-stream", name="w.bin")
    b = hub.put_artifact(b"weights", media_type="application/octet-stream", name="w.bin")
    assert a["id"] == b["id"] and a["size"] == 7
    assert hub.read_artifact(a["id"]) == b"weights"
    assert hub.files.path(a["id"]).read_bytes() == b"weights"
    with pytest.raises(ValidationError):
        hub.read_artifact("../../etc/passwd")
    with pytest.raises(NotFoundError):
        hub.read_artifact("0" * 64)


def test_model_registry_crud(hub):
    hub.put_model(
        {
            "name": "m",
            "backend": "hf",
            "source": {"path": "/x"},
            "task_types": ["embedding"],
            "config": {},
        }
    )
    with pytest.raises(ConflictError):
        hub.put_model({"name": "m", "backend": "hf"})
    hub.put_model(
        {"name": "m", "backend": "openai", "source": {"base_url": "http://127.0.0.1:1"}},
        replace=True,
    )
    assert hub.get_model("m")["backend"] == "openai"
    assert [m["name"] for m in hub.list_models()] == ["m"]
    hub.delete_model("m")
    with pytest.raises(NotFoundError):
        hub.delete_model("m")


def test_a_replica_that_renews_its_lease_while_being_declared_dead_keeps_its_tasks(hub):
    from open_autoglm.storage.replicas import ReplicaRegistry
    from open_autoglm.storage.tables import replicas

    now = time.time()
    hub.replicas.register("slow", now - 100)  # its lease (30 s) looks lapsed when read ...
    hub.write(TaskWrite(task_id="t", row={**row("t"), "owner": "slow"})).result(10)

    def renew_meanwhile(pid: int) -> bool:
        # ... and it renews it between that read and the delete (its heartbeat was waiting
        # on a lock): the check of the other replicas' processes runs in between.
        with hub.engine.begin() as conn:
            conn.execute(replicas.update().where(replicas.c.id == "slow").values(heartbeat_at=now))
        return True

    registry = ReplicaRegistry(hub.engine, hub.replicas._columns, hub.replicas._row,
                               alive=renew_meanwhile)  # fmt: skip
    registry.register("me", now)
    assert registry.claim_orphans("me", now, lease_s=30) == []
    assert {r["id"] for r in hub.replicas.live()} == {"slow", "me"}
    assert hub.get_task("t")["owner"] == "slow"
    # Once its lease really lapses, it is declared dead and its task is taken over.
    claimed = hub.replicas.claim_orphans("me", now + 31, lease_s=30)
    assert [r["id"] for r in claimed] == ["t"] and hub.get_task("t")["owner"] == "me"


def test_late_workflow_bookkeeping_of_a_lost_run_is_fenced(hub):
    """A replica that lost a run can neither repoint its step at another task nor turn a
    callback the new owner delivered back into a failure."""
    from open_autoglm.storage.workflows_repo import RunWrite, WorkflowRepo

    repo = WorkflowRepo(hub.engine)
    created = {"name": "w", "spec": {}, "inputs": {}, "created_at": 1.0, "owner": "r1"}
    step = {"step_id": "s", "attempt": 1, "task": {}, "idempotency_key": "w/s/1"}
    callback = {"id": "cb1", "event": "run.succeeded", "url": "http://127.0.0.1:9/", "payload": {}}
    first = RunWrite(
        "w", "running", {}, None, 1.0, created=created, step_tasks=[step], callbacks=[callback]
    )
    assert repo.save([first]) == set()

    assert repo.set_task_id("w", "s", 1, "t-r1", owner="r1")
    assert not repo.set_task_id("w", "s", 1, "t-r2", owner="r2")  # r2 does not drive "w"
    assert [s["task_id"] for s in repo.step_tasks("w")] == ["t-r1"]

    def attempt(n: int, status: int | None) -> dict:
        return {"attempt": n, "status": status, "error": None, "timestamp": 2.0, "duration_s": 0}

    repo.record_callback_attempt("cb1", "w", attempt(1, 200), "delivered")
    repo.record_callback_attempt("cb1", "w", attempt(2, None), "failed")  # a late retry
    (cb,) = repo.callbacks("w")
    assert cb["status"] == "delivered"
    assert [d["status_code"] for d in cb["deliveries"]] == [200, None]  # both on the record
    assert repo.pending_callbacks() == []


def _finished(hub, tid: str, *, durable: bool, ended: float) -> None:
    hub.write(
        TaskWrite(
            task_id=tid,
            row={**row(tid), "durable": durable},
            fields={"status": "succeeded", "finished_at": ended},
            terminal=True,
            events=[(ended, "status", {"status": "succeeded"})],
            result={"embeddings": [[0.5] * 8]},
            has_result=True,
        )
    ).result(10)


def test_prune_online_deletes_only_expired_online_records(hub):
    now = time.time()
    _finished(hub, "old-online", durable=False, ended=now - 100)
    _finished(hub, "old-online-2", durable=False, ended=now - 50)
    _finished(hub, "new-online", durable=False, ended=now)
    _finished(hub, "old-durable", durable=True, ended=now - 100)
    _finished(hub, "old-online-art", durable=False, ended=now - 100)
    hub.put_artifact(b"png", media_type="image/png", task_id="old-online-art")
    running = {**row("running-online"), "durable": False, "status": "running"}
    hub.write(TaskWrite(task_id="running-online", row=running)).result(10)

    # chunk=1: several transactions, stopping at the first that finds fewer than a chunk
    assert hub.prune_online(now - 10, chunk=1) == 2
    for gone in ("old-online", "old-online-2"):
        with pytest.raises(NotFoundError):
            hub.get_task(gone)
        assert hub.events(gone) == []
        assert hub.get_result(gone) == (False, None)
    for kept in ("new-online", "old-durable", "old-online-art", "running-online"):
        assert hub.get_task(kept)["id"] == kept
    assert hub.get_result("old-durable") == (True, {"embeddings": [[0.5] * 8]})
    assert len(hub.events("new-online")) == 1
    assert hub.prune_online(now - 10) == 0  # nothing left to do
