"""A process-mode task's worker, cancelled (or past its deadline: the same SIGTERM), runs the
handler's ``finally`` blocks before it exits: a training supervisor stops its ranks there."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers.paths import PLUGIN_DIR
from helpers.polling import wait_task
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
