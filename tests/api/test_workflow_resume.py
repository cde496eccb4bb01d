"""SIGKILL a server mid-workflow, restart it, and check the run finishes without re-running steps.

Each step is a ``record`` task (test plugin) that appends its task id to a file once it has
done its work, so the file counts executions. The guarantee: a step that had finished before
the kill never runs again; a step whose task was running is re-attached to that same task
(the core re-queues it), so it may run at most once more and still has one attempt.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.paths import PLUGIN_DIR
from helpers.services import ServerProcess

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}

SPEC = {
    "name": "chain_and_fan",
    "inputs": {"items": {"type": "list"}},
    "steps": [
        {"name": "first", "task": {"task_type": "record", "params": {"seconds": 0.2}}},
        {
            "name": "fan",
            "depends_on": ["first"],
            "map": "inputs.items",
            "task": {"task_type": "record", "params": {"seconds": 0.5}},
        },
        {
            "name": "join",
            "depends_on": ["fan"],
            "task": {"task_type": "record", "params": {"seconds": 0.2}},
        },
        {
            "name": "last",
            "depends_on": ["join"],
            "task": {"task_type": "record", "params": {"seconds": 0.1}},
        },
    ],
}


def _instances(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for s in run["steps"] for i in s["instances"]}


def run_resume_scenario(tmp_path: Path, storage_url: str | None) -> None:
    record = tmp_path / "record.log"
    env = {
        "AUTOGLM_TEST_RECORD": str(record),
        "AUTOGLM_PLUGINS__DIRS": json.dumps([str(PLUGIN_DIR)]),
        "AUTOGLM_EXECUTOR__CPU": "2",
    }
    if storage_url:
        env["AUTOGLM_STORAGE_URL"] = storage_url
    data = tmp_path / "data"
    server = ServerProcess(data, env=env).start()
    try:
        resp = httpx.post(
            server.url + "/v1/workflows",
            json={"spec": SPEC, "inputs": {"items": list(range(6))}},
            timeout=10,
        )
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["id"]
        # Kill once the chain head and some of the fan-out are done, others mid-run.
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, "the run never got far enough"
            run = httpx.get(f"{server.url}/v1/workflows/runs/{run_id}", timeout=5).json()
            states = {k: v["status"] for k, v in _instances(run).items()}
            fan_done = sum(
                1 for k, s in states.items() if k.startswith("fan[") and s == "succeeded"
            )
            if fan_done >= 2 and any(s == "running" for s in states.values()):
                break
            time.sleep(0.02)
        server.kill()
    finally:
        server.stop()
    before = _instances(run)
    done_before = {k for k, v in before.items() if v["status"] == "succeeded"}
    running_before = {k for k, v in before.items() if v["status"] == "running"}
    assert "first" in done_before and running_before

    server = ServerProcess(data, env=env).start()
    try:
        deadline = time.monotonic() + 30
        while True:
            final = httpx.get(f"{server.url}/v1/workflows/runs/{run_id}", timeout=5).json()
            if final["status"] in TERMINAL:
                break
            assert time.monotonic() < deadline, f"run still {final['status']} after restart"
            time.sleep(0.05)
    finally:
        server.stop()

    assert final["status"] == "succeeded", final
    after = _instances(final)
    assert set(after) == {"first", "join", "last"} | {f"fan[{i}]" for i in range(6)}
    runs = collections.Counter(record.read_text().split())
    for sid, inst in after.items():
        assert inst["status"] == "succeeded", (sid, inst)
        executions = sum(runs[t["task_id"]] for t in inst["tasks"])
        if sid in done_before:
            assert executions == 1, f"{sid} finished before the kill but ran {executions}x"
            assert inst["tasks"] == before[sid]["tasks"]
        elif sid in running_before:
            # Re-attached to the same task: the same single attempt, run at most twice.
            assert len(inst["tasks"]) == 1 and inst["attempts"] == 1, inst
            assert inst["tasks"][0]["task_id"] == before[sid]["task_id"]
            assert 1 <= executions <= 2
        else:
            assert executions == 1, f"{sid} ran {executions}x"
    # No task ran that no step knows about (no orphan resubmissions).
    known = {t["task_id"] for inst in after.values() for t in inst["tasks"]}
    assert set(runs) <= known


def test_resume_after_sigkill_sqlite(tmp_path: Path) -> None:
    run_resume_scenario(tmp_path, None)


@pytest.mark.postgres
def test_resume_after_sigkill_postgres(tmp_path: Path, pg_db: str) -> None:
    run_resume_scenario(tmp_path, pg_db)
