"""``autoglm serve`` tells the truth: the banner comes once connections are accepted, and
``--access-log`` logs each request with the task it touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from open_autoglm.ports import free_port


def test_banner_means_ready_and_access_log_names_tasks(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    cmd = [
        sys.executable, "-m", "open_autoglm.cli.main", "serve", "--port", str(port),
        "--data-dir", str(tmp_path / "data"), "--access-log",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # a generous bound on start-up, not a measurement
        while "accepting connections" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # The banner is out: the very first connection must succeed, without retrying.
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/healthz", timeout=30).status_code == 200
        ready = httpx.get(url + "/readyz", timeout=30).json()
        assert ready["status"] == "ready" and ready["loading"] == []
        task = httpx.post(url + "/v1/tasks", json={"task_type": "echo", "input": 1}).json()
        deadline = time.monotonic() + 30
        while "POST /v1/tasks 202" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = log.read_text()
        line = next(ln for ln in text.splitlines() if "POST /v1/tasks 202" in ln)
        assert f"task={task['id']}" in line and "open_autoglm.access" in line
        assert text.index("starting") < text.index("accepting connections")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
