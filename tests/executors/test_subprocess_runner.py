"""A process-mode task's worker, cancelled (or past its deadline: the same SIGTERM), runs the
handler's ``finally`` blocks before it exits: a training supervisor stops its ranks there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers.paths import PLUGIN_DIR
from helpers.polling import alive_after, wait_task
from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.runtime import Runtime


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "data", plugins={"dirs": [PLUGIN_DIR]})
    with TestClient(create_app(runtime=Runtime(settings))) as client:
        yield client


def _running(api: TestClient, task_id: str, timeout: float = 60) -> None:
    """Wait until the probe reports from inside its ``try`` (its pid, in a progress event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = api.get(f"/v1/tasks/{task_id}/events").json()["events"]
        if any(e["kind"] == "progress" and "pid" in e["data"] for e in events):
            return
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never reported progress")


def test_a_cancelled_worker_runs_its_cleanup(api: TestClient, tmp_path: Path) -> None:
    cleanup = tmp_path / "cleaned-up"
    spec = {"task_type": "probe", "params": {"seconds": 120, "cleanup_file": str(cleanup)}}
    task_id = api.post("/v1/tasks", json=spec).json()["id"]
    _running(api, task_id)
    assert api.post(f"/v1/tasks/{task_id}/cancel").status_code in (200, 202)
    task = wait_task(api, task_id, timeout=60)
    assert task["status"] == "cancelled"
    # the outcome is recorded once the worker has exited: its finally ran, or never will
    assert cleanup.read_text() == task_id


_SERVER = """
import sys, time
from pathlib import Path
from helpers.paths import PLUGIN_DIR
from helpers.settings import make_settings
from open_autoglm.runtime import Runtime

rt = Runtime(make_settings(Path(sys.argv[1]), plugins={"dirs": [PLUGIN_DIR]})).start()
task, _ = rt.submit({"task_type": "probe", "params": {"seconds": 600}}).result(30)
while not (pids := [e["data"]["pid"] for e in rt.storage.events(task["id"]) if "pid" in e["data"]]):
    time.sleep(0.05)
print(pids[0], flush=True)
rt.stop()  # then the interpreter exits with the task still running
"""


def test_an_exiting_server_ends_its_running_workers(tmp_path: Path) -> None:
    """Workers are not daemonic (their ranks are their children), yet a server that exits
    neither waits for them nor leaves them running."""
    tests = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
    }
    # a hang bound, not a speed claim: the probe would sleep for 10 minutes
    done = subprocess.run(
        [sys.executable, "-c", _SERVER, str(tmp_path / "data")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert alive_after([int(done.stdout.split()[0])]) == []
