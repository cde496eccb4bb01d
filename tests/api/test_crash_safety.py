"""SIGKILL the server mid-run, restart it, and check that no accepted job is lost or doubled.

Executions are counted through a side effect (the ``record`` task type of the test plugin
appends its task id to a file). The guarantee (see README, "Durability"): jobs that had not
started run exactly once; jobs that were running at the kill run again at most once.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import time

import httpx
import pytest
import sqlalchemy as sa

from helpers.paths import PLUGIN_DIR
from helpers.services import ServerProcess

N_JOBS = 120
TERMINAL = {"succeeded", "failed", "cancelled"}


def _statuses(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, status FROM tasks")).all()
    engine.dispose()
    return {r[0]: r[1] for r in rows}


def _terminal_events(url: str) -> collections.Counter[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT task_id, data FROM task_events WHERE kind = 'status'")
        ).all()
        results = conn.execute(
            sa.text("SELECT task_id, COUNT(*) FROM results GROUP BY task_id")
        ).all()
    engine.dispose()
    counts: collections.Counter[str] = collections.Counter()
    for task_id, data in rows:
        if json.loads(data)["status"] in TERMINAL:
            counts[task_id] += 1
    assert all(n == 1 for _, n in results), "a result was recorded twice"
    return counts


def run_crash_scenario(tmp_path, storage_url: str | None) -> None:
    record = tmp_path / "record.log"
    data = tmp_path / "data"
    env = {
        "AUTOGLM_TEST_RECORD": str(record),
        "AUTOGLM_PLUGINS__DIRS": json.dumps([str(PLUGIN_DIR)]),
        "AUTOGLM_EXECUTOR__CPU": "2",
    }
    if storage_url:
        env["AUTOGLM_STORAGE_URL"] = storage_url
    db_url = storage_url or f"sqlite:///{data / 'autoglm.db'}"
    server = ServerProcess(data, env=env).start()
    accepted: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:

            def post(i: int) -> str | None:
                spec = {"task_type": "record", "params": {"seconds": 0.05}, "priority": i % 10}
                resp = client.post("/v1/tasks", json=spec)
                return resp.json()["id"] if resp.status_code == 202 else None

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                accepted = [tid for tid in pool.map(post, range(N_JOBS)) if tid]
            # Let some finish and some be mid-run, then kill without warning.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                done = sum(1 for s in _statuses(db_url).values() if s == "succeeded")
                if done >= 10:
                    break
                time.sleep(0.05)
    finally:
        server.kill()
    assert len(accepted) == N_JOBS
    at_kill = _statuses(db_url)
    assert set(accepted) <= set(at_kill), "an accepted job is missing after SIGKILL"
    by_state = collections.defaultdict(set)
    for tid in accepted:
        by_state[at_kill[tid]].add(tid)
    assert by_state["succeeded"] and by_state["queued"], {k: len(v) for k, v in by_state.items()}

    server = ServerProcess(data, env=env, port=server.port).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            deadline = time.monotonic() + 90
            final: dict[str, dict] = {}
            while time.monotonic() < deadline and len(final) < len(accepted):
                for tid in accepted:
                    if tid not in final:
                        task = client.get(f"/v1/tasks/{tid}").json()
                        if task["status"] in TERMINAL:
                            final[tid] = task
                time.sleep(0.1)
    finally:
        server.stop()
    assert len(final) == len(accepted), "not every accepted job reached a terminal state"
    assert all(t["status"] == "succeeded" for t in final.values())
    assert all(t["result"] == {"recorded": tid} for tid, t in final.items())

    runs = collections.Counter(record.read_text().split())
    for tid in by_state["queued"] | by_state["succeeded"]:
        assert runs[tid] == 1, f"{tid} ({at_kill[tid]} at kill) ran {runs[tid]} times"
    for tid in by_state["running"]:
        assert 1 <= runs[tid] <= 2, f"{tid} (running at kill) ran {runs[tid]} times"
    terminal = _terminal_events(db_url)
    assert all(terminal[tid] == 1 for tid in accepted), "a job reached a terminal state twice"


def test_sigkill_sqlite(tmp_path):
    run_crash_scenario(tmp_path, None)


@pytest.mark.postgres
def test_sigkill_postgres(tmp_path, pg_db):
    run_crash_scenario(tmp_path, pg_db)
