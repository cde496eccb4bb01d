"""Several replicas on one database: each runs only its own tasks; a dead one's are taken over.

Both runtimes live in this process, so "dead" is a replica whose lease is not renewed (its
dispatcher and heartbeat stopped): the same-host process check cannot declare it dead.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from helpers.paths import PLUGIN_DIR
from helpers.services import ServerProcess
from helpers.settings import make_settings
from open_autoglm.client import Client
from open_autoglm.runtime import Runtime
from open_autoglm.storage.tables import replicas, task_events, tasks
from open_autoglm.storage.workflows_repo import workflow_runs

LEASE_S = 1.0


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("pg_db"))


@pytest.fixture
def replica(tmp_path: Path, shared_url: str, monkeypatch: pytest.MonkeyPatch):
    record = tmp_path / "record.log"
    monkeypatch.setenv("AUTOGLM_TEST_RECORD", str(record))
    started: list[Runtime] = []

    def make(*, workflows: bool = False) -> Runtime:
        settings = make_settings(
            tmp_path / f"replica{len(started)}",
            storage={"url": shared_url},
            scheduler={"lease_s": LEASE_S},
            executor={"cpu": 1, "threads": 2},
            plugins={"dirs": [PLUGIN_DIR]},
        )
        rt = Runtime(settings)
        if workflows:
            from open_autoglm.api.routes.workflows import setup

            setup(rt)
        rt.start()
        started.append(rt)
        return rt

    make.record = record  # type: ignore[attr-defined]
    yield make
    for rt in reversed(started):
        rt.stop()


def _runs(record: Path) -> Counter[str]:
    return Counter(record.read_text().split()) if record.exists() else Counter()


def _submit(rt: Runtime, n: int) -> list[str]:
    return [
        rt.submit({"task_type": "record", "params": {"seconds": 0.05}}).result(10)[0]["id"]
        for _ in range(n)
    ]


def test_a_new_replica_leaves_a_live_replicas_tasks_alone(replica) -> None:
    a = replica()
    ids = _submit(a, 6)
    b = replica()  # starts (and recovers) while a's tasks are queued or running
    time.sleep(LEASE_S * 1.5)  # b's lease thread scans for orphans at least once
    finals = [a.wait(tid, 30) for tid in ids]
    assert [t["status"] for t in finals] == ["succeeded"] * 6
    assert _runs(replica.record) == Counter(dict.fromkeys(ids, 1))
    assert {a.storage.get_task(tid)["owner"] for tid in ids} == {a.replica_id}
    assert not b.scheduler.live
    assert {r["id"] for r in b.storage.replicas.live()} == {a.replica_id, b.replica_id}


def test_a_dead_replicas_tasks_are_taken_over_after_its_lease(replica) -> None:
    a = replica()
    a.scheduler.stop()  # a accepts and stores, but will never run anything
    ids = _submit(a, 4)
    a._lease_stop.set()  # ... and stops renewing its lease: a is dead to the others
    a._lease_thread.join(5)
    died = time.monotonic()
    b = replica()
    deadline = time.monotonic() + 30
    while sum(_runs(replica.record).values()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    took = time.monotonic() - died
    rows = [b.storage.get_task(tid) for tid in ids]
    while any(r["status"] != "succeeded" for r in rows) and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = [b.storage.get_task(tid) for tid in ids]
    assert [r["status"] for r in rows] == ["succeeded"] * 4
    assert _runs(replica.record) == Counter(dict.fromkeys(ids, 1))
    assert {r["owner"] for r in rows} == {b.replica_id}
    assert took >= LEASE_S * 0.9  # not before a's lease lapsed
    assert a.replica_id not in {r["id"] for r in b.storage.replicas.live()}


def test_a_dead_replicas_workflow_run_is_taken_over(replica) -> None:
    a = replica(workflows=True)
    a.scheduler.stop()  # a stores the run and its first step's task, but runs nothing
    spec = {
        "name": "handover",
        "steps": [
            {"name": "one", "task": {"task_type": "record", "params": {"seconds": 0.01}}},
            {"name": "two", "depends_on": ["one"], "task": {"task_type": "echo", "input": 2}},
        ],
    }
    run_id = a.services["workflows"].submit(spec).result(10)["id"]
    deadline = time.monotonic() + 10
    while not a.services["workflows"].repo.step_tasks(run_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    a._lease_stop.set()
    a._lease_thread.join(5)
    b = replica(workflows=True)
    wf = b.services["workflows"]
    deadline = time.monotonic() + 30
    while wf.get(run_id)["status"] != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.05)
    run = wf.get(run_id)
    assert run["status"] == "succeeded"
    assert sum(_runs(replica.record).values()) == 1  # step one ran once, on b
    with b.storage.engine.connect() as conn:
        owner = conn.execute(
            sa.select(workflow_runs.c.owner).where(workflow_runs.c.id == run_id)
        ).scalar_one()
    assert owner == b.replica_id


def _until(check, timeout: float = 30.0) -> None:
    assert _within(check, timeout), "timed out"


def _within(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_stalled_replica_cannot_overwrite_tasks_taken_over_from_it(replica, tmp_path) -> None:
    """Fencing: a replica that missed its lease and wakes up later neither records its late
    results over the new owner's nor starts tasks that are no longer its own."""
    gate = tmp_path / "gate"
    a = replica()
    slow = a.submit({"task_type": "record", "params": {"gate": str(gate)}}).result(10)[0]["id"]
    queued = a.submit({"task_type": "record"}).result(10)[0]["id"]  # behind it (1 cpu)
    _until(lambda: a.storage.get_task(slow)["status"] == "running")
    a._lease_stop.set()  # a "stalls": its lease lapses while its handler waits on the gate
    a._lease_thread.join(5)
    b = replica()
    _until(lambda: {a.storage.get_task(t)["owner"] for t in (slow, queued)} == {b.replica_id})

    gate.touch()  # a's handler finishes now, b's run of the same task too
    _until(lambda: not a.scheduler.live)  # a has given up both tasks
    _until(lambda: all(b.storage.get_task(t)["status"] == "succeeded" for t in (slow, queued)))
    _until(lambda: not b.scheduler.live)

    # a's late "succeeded" for `slow` was dropped and it never started `queued`.
    runs = _runs(replica.record)
    assert runs[queued] == 1  # only b ran it
    assert runs[slow] == 2  # at least once: a's run was already under way when it stalled
    for tid in (slow, queued):
        statuses = [e["data"]["status"] for e in b.storage.events(tid) if e["kind"] == "status"]
        assert statuses.count("succeeded") == 1, statuses
        row = b.storage.get_task(tid)
        assert row["owner"] == b.replica_id
    # A waiter on the stalled replica is told what the database says.
    assert a.wait(slow, 5)["status"] == "succeeded"
    # Its metrics do not count the success it could not record; b's count both.
    assert a.metrics.tasks.transitions.get("succeeded", 0) == 0
    assert b.metrics.tasks.transitions.get("succeeded", 0) == 2


def test_a_stalled_replica_cannot_drive_a_workflow_run_taken_over_from_it(
    replica, tmp_path
) -> None:
    gate = tmp_path / "gate"
    a = replica(workflows=True)
    spec = {
        "name": "stalled",
        "steps": [
            {"name": "one", "task": {"task_type": "record", "params": {"gate": str(gate)}}},
            {"name": "two", "depends_on": ["one"], "task": {"task_type": "record"}},
        ],
    }
    run_id = a.services["workflows"].submit(spec).result(10)["id"]
    repo = a.services["workflows"].repo
    _until(lambda: [s["task_id"] is not None for s in repo.step_tasks(run_id)] == [True])
    one = repo.step_tasks(run_id)[0]["task_id"]
    _until(lambda: a.storage.get_task(one)["status"] == "running")
    a._lease_stop.set()  # a stalls while step one runs
    a._lease_thread.join(5)
    b = replica(workflows=True)
    wf = b.services["workflows"]
    with b.storage.engine.connect() as conn:
        owner = sa.select(workflow_runs.c.owner).where(workflow_runs.c.id == run_id)
        _until(lambda: conn.execute(owner).scalar_one() == b.replica_id)

    gate.touch()  # a's step one ends: its record, and its run's next step, are fenced off
    _until(lambda: wf.get(run_id)["status"] == "succeeded")
    _until(lambda: a.services["workflows"].live_runs() == 0 and not a.scheduler.live)
    _until(lambda: not b.scheduler.live)

    steps = repo.step_tasks(run_id)
    two = next(s["task_id"] for s in steps if s["step_id"] == "two")
    runs = _runs(replica.record)
    assert runs == Counter({one: 2, two: 1})  # a's run of one was under way; two ran on b only
    # One story in the run's log: b's. a's view (step one's outcome lost) was never written.
    statuses = [e["data"]["status"] for e in repo.events(run_id) if e["kind"] == "run"]
    assert statuses == ["running", "succeeded"], statuses
    assert a.services["workflows"].wait(run_id, 5)["status"] == "succeeded"


def test_a_replica_that_wakes_up_dead_stops_what_was_taken_over(replica) -> None:
    a = replica()
    tid = a.submit({"task_type": "sleep", "params": {"seconds": 20}}).result(10)[0]["id"]
    _until(lambda: a.storage.get_task(tid)["status"] == "running")
    a._lease_stop.set()  # a stalls ...
    a._lease_thread.join(5)
    b = replica()
    _until(lambda: a.storage.get_task(tid)["owner"] == b.replica_id)  # ... b declared it dead
    woke = time.monotonic()
    a._renew_lease()  # a's next beat finds its lease gone
    _until(lambda: not a.scheduler.live, timeout=5)
    assert time.monotonic() - woke < 5  # stopped, not slept out (20 s)
    row = a.storage.get_task(tid)
    assert row["owner"] == b.replica_id  # b's record, untouched: requeued or running on b
    assert row["status"] in ("queued", "running")
    assert a.wait(tid, 1)["status"] in ("queued", "running")  # a waiter on a reads b's record
    b.scheduler.cancel(tid)


def test_a_server_frozen_past_its_lease_lets_go_when_it_thaws(
    shared_url: str, tmp_path: Path
) -> None:
    """Real processes: server a is frozen (SIGSTOP) while it runs a task, b takes the task
    over, a is thawed. a's next heartbeat finds it was declared dead: it stops its run, and
    nothing it writes for that task reaches the database."""
    env = {
        "AUTOGLM_STORAGE__URL": shared_url,
        "AUTOGLM_SCHEDULER__LEASE_S": str(LEASE_S),
        "AUTOGLM_EXECUTOR__CPU": "1",
        "AUTOGLM_MODELS__REPLICAS": "0",
    }
    engine = sa.create_engine(shared_url)

    def row(tid: str) -> dict:
        with engine.connect() as conn:
            got = conn.execute(sa.select(tasks.c.owner, tasks.c.status).where(tasks.c.id == tid))
            return dict(got.one()._mapping)

    def replica_ids() -> set[str]:
        with engine.connect() as conn:
            return {str(r[0]) for r in conn.execute(sa.select(replicas.c.id))}

    a = ServerProcess(tmp_path / "a", env=env).start()
    b = None
    try:
        (a_id,) = replica_ids()
        with Client(a.url) as c:
            tid = c.submit({"task_type": "sleep", "params": {"seconds": 60}})["id"]
        _until(lambda: row(tid)["status"] == "running")
        b = ServerProcess(tmp_path / "b", env=env).start()
        assert a.proc is not None

        def taken_over() -> bool:
            return row(tid)["owner"] not in (None, a_id)

        for _ in range(3):
            os.kill(a.proc.pid, signal.SIGSTOP)
            try:
                took = _within(taken_over, 10)  # b declares a dead after its lease
            finally:
                os.kill(a.proc.pid, signal.SIGCONT)
            # Rarely a freezes inside a transaction (a heartbeat, a progress event), and b's
            # claim waits on its lock; thawed, a finishes it first and may renew its lease,
            # so b rightly leaves it alone: freeze again.
            if took or _within(taken_over, 3):
                break
        assert taken_over()
        b_id = row(tid)["owner"]
        with Client(a.url) as c:
            # a finds out at its next beat (every lease/3) and cancels its own run of the task
            # (a 60 s sleep): nothing runs on a any more.
            _until(lambda: "autoglm_tasks_running 0.0" in httpx.get(a.url + "/metrics").text, 15)
            assert c.get(tid)["status"] in ("queued", "running")  # a serves b's record
        assert row(tid)["owner"] == b_id  # a's cancelled run wrote nothing
        with engine.connect() as conn:
            kinds = [
                (r.kind, r.data)
                for r in conn.execute(
                    sa.select(task_events.c.kind, task_events.c.data).where(
                        task_events.c.task_id == tid
                    )
                )
            ]
        assert not any(k == "status" and "cancelled" in str(d) for k, d in kinds), kinds
        with Client(b.url) as c:
            c.cancel(tid)
    finally:
        for server in (b, a):
            if server is not None:
                server.stop()
        engine.dispose()
