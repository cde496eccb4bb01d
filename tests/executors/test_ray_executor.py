"""``executor.backend = "ray"`` with a real local Ray instance (the session's ``ray_cluster``).

Process-mode tasks run as Ray tasks with their resource request mapped one to one, in a Ray
worker process (the raylet's child, not ours), and report back over the same protocol as a
local subprocess: progress, artifacts, service calls, outcome. Deadlines, cancellation and a
dying worker are handled as for a subprocess; shutting down kills what it started.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from fastapi.testclient import TestClient

from helpers.graphs import community_graph
from helpers.paths import PLUGIN_DIR
from helpers.polling import gone, wait_task
from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.executors.ray_executor import RayExecutor
from open_autoglm.runtime import Runtime


def _settings(data: Path) -> Any:
    return make_settings(
        data,
        plugins={"dirs": [PLUGIN_DIR]},
        executor={"backend": "ray", "cpu": 4, "memory_mb": 4096},
    )


@pytest.fixture
def api(tmp_path: Path, ray_cluster: object) -> Iterator[TestClient]:
    app = create_app(runtime=Runtime(_settings(tmp_path / "data")))
    with TestClient(app) as client:
        yield client


def submit(api: TestClient, spec: dict[str, Any]) -> str:
    resp = api.post("/v1/tasks", json=spec)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def events(api: TestClient, task_id: str) -> list[dict[str, Any]]:
    return list(api.get(f"/v1/tasks/{task_id}/events").json()["events"])


def worker_pid(api: TestClient, task_id: str, timeout: float = 60) -> int:
    """The pid the probe reports in its progress event, once it is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in events(api, task_id):
            if e["kind"] == "progress" and "pid" in e["data"]:
                return int(e["data"]["pid"])
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} never reported progress")


def test_a_process_task_runs_as_a_ray_task_with_its_resources(api: TestClient) -> None:
    first = submit(
        api, {"task_type": "probe", "resources": {"cpu": 2, "memory_mb": 300}, "timeout_s": 60}
    )
    second = submit(api, {"task_type": "probe", "timeout_s": 60})
    a, b = wait_task(api, first), wait_task(api, second)
    assert a["status"] == "succeeded", a["error"]
    assert b["status"] == "succeeded", b["error"]
    ra, rb = a["result"], b["result"]
    # A Ray worker (started by the raylet), not a child of this test process.
    assert ra["parent"] == "raylet" and ra["pid"] != psutil.Process().pid
    # The request reached Ray one to one, and the worker's threads follow the cpu allotment.
    assert ra["assigned"] == {"CPU": 2.0, "memory": 300 * 2**20}
    assert rb["assigned"] == {"CPU": 1.0}
    assert (ra["omp_threads"], rb["omp_threads"]) == ("2", "1")
    assert ra["hub_offline"] == "1"
    assert ra["pid"] != rb["pid"]  # max_calls=1: a fresh worker per task
    # The artifact the worker wrote is recorded against the task and readable through the API.
    content = api.get(f"/v1/artifacts/{ra['artifact']}/content")
    assert content.status_code == 200 and content.content == f"probe {first}".encode()
    assert api.get(f"/v1/artifacts/{ra['artifact']}").json()["task_id"] == first
    assert ra["models"] == []  # the service call travelled back to this server and answered
    kinds = [e["kind"] for e in events(api, first)]
    assert "progress" in kinds
    where = api.get("/readyz").json()["executor"]
    assert where["backend"] == "ray" and where["capacity"]["cpu"] == 4
    assert where["ray"]["started_here"] is True and where["ray"]["tasks"] == 0


def test_training_on_ray_stores_artifacts_registers_and_predicts(api: TestClient) -> None:
    """Distributed training under Ray: the ranks are Ray actors reserving their own CPUs."""
    graph = community_graph(n_per_class=20, classes=3, dim=6, seed=3)
    task_id = submit(
        api,
        {
            "task_type": "graph-train",
            "input": graph,
            "params": {
                "kind": "sage",
                "hidden": 16,
                "epochs": 12,
                "lr": 0.02,
                "mode": "sync",
                "workers": 2,
                "batch_size": 8,
                "fanout": [5, 5],
                "name": "ray-g",
            },
            "timeout_s": 180,
        },
    )
    task = wait_task(api, task_id, timeout=180)
    assert task["status"] == "succeeded", task["error"]
    result = task["result"]
    assert result["registered"] == "ray-g"  # registered through the service proxy
    assert result["metrics"]["test_acc"] >= 0.6
    png = api.get(f"/v1/artifacts/{result['artifacts']['curves']}/content")
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    progress = [e for e in events(api, task_id) if e["kind"] == "progress"]
    assert len(progress) >= 10
    logs = [e["data"]["message"] for e in events(api, task_id) if e["kind"] == "log"]
    started = [m for msg in logs if (m := re.match(r"rank (\d) started \(pid (\d+), (.+)\)", msg))]
    # both ranks ran as Ray actors (Ray workers of their own), not as processes of the task
    assert sorted(int(m.group(1)) for m in started) == [0, 1]
    assert {m.group(3) for m in started} == {"ray actor"}
    assert len({int(m.group(2)) for m in started}) == 2
    pred = api.post(
        "/v1/infer",
        json={
            "task_type": "graph-predict",
            "model": "ray-g",
            "params": {"node_ids": graph["nodes"][:4]},
        },
    )
    assert pred.status_code == 200, pred.text
    assert [p["node"] for p in pred.json()["result"]["predictions"]] == graph["nodes"][:4]


def test_deadline_and_cancel_kill_the_ray_worker(api: TestClient) -> None:
    # the deadline covers the Ray worker's start too: long enough that it reports its pid
    # first even on a loaded machine, far below the probe's 60 s
    timed = submit(api, {"task_type": "probe", "params": {"seconds": 60}, "timeout_s": 10})
    pid = worker_pid(api, timed)
    task = wait_task(api, timed, timeout=30)
    assert task["status"] == "failed" and task["error"]["code"] == "timeout"
    assert gone(pid), f"the timed-out task's worker {pid} is still running"

    cancelled = submit(api, {"task_type": "probe", "params": {"seconds": 60}})
    pid = worker_pid(api, cancelled)
    assert api.post(f"/v1/tasks/{cancelled}/cancel").status_code in (200, 202)
    task = wait_task(api, cancelled, timeout=30)
    assert task["status"] == "cancelled"
    assert gone(pid), f"the cancelled task's worker {pid} is still running"


def test_a_dying_worker_fails_retryably_and_is_retried(api: TestClient) -> None:
    task_id = submit(api, {"task_type": "probe", "params": {"exit_code": 3}, "max_retries": 1})
    task = wait_task(api, task_id, timeout=60)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "worker_died"
    assert "Ray worker" in task["error"]["message"]
    assert task["attempts"] == 2  # worker_died is retryable: the scheduler ran it again


def test_shutdown_kills_its_ray_tasks_and_leaves_them_to_recovery(
    tmp_path: Path, ray_cluster: object
) -> None:
    import ray

    rt = Runtime(_settings(tmp_path / "data")).start()
    executor = rt._executor
    assert isinstance(executor, RayExecutor)
    try:
        task, _ = rt.submit({"task_type": "probe", "params": {"seconds": 60}}).result(10)
        deadline = time.monotonic() + 60
        pid = None
        while pid is None and time.monotonic() < deadline:
            for e in rt.storage.events(task["id"]):
                if e["kind"] == "progress":
                    pid = e["data"]["pid"]
            time.sleep(0.1)
        assert pid is not None, "the probe never started"
        assert executor.live_tasks() == [task["id"]]
    finally:
        rt.stop()
    assert gone(pid), f"worker {pid} outlived the server"
    assert ray.is_initialized()  # the session's instance: this runtime only released its use
    storage = Runtime(_settings(tmp_path / "data")).storage.open()
    try:
        stored = storage.get_task(task["id"])
    finally:
        storage.close()
    assert stored["status"] == "running"  # not marked cancelled: recovery re-queues it


def test_a_task_ray_cannot_place_yet_says_so_and_runs_when_cpus_free(api: TestClient) -> None:
    import ray

    @ray.remote(num_cpus=2)
    class Holder:  # stands for other work holding cluster CPUs (e.g. model replicas)
        def ping(self) -> bool:
            return True

    holder = Holder.remote()  # type: ignore[attr-defined]
    assert ray.get(holder.ping.remote(), timeout=60)
    try:
        task_id = submit(api, {"task_type": "probe", "resources": {"cpu": 3}, "timeout_s": 120})
        deadline = time.monotonic() + 30
        notes: list[dict[str, Any]] = []
        while not notes and time.monotonic() < deadline:
            notes = [e for e in events(api, task_id) if e["data"].get("ray_pending")]
            time.sleep(0.2)
        assert notes, "a task Ray could not place left no note"
        assert "'num_cpus': 3" in notes[0]["data"]["message"]
        assert api.get(f"/v1/tasks/{task_id}").json()["status"] == "running"
    finally:
        ray.kill(holder)
    task = wait_task(api, task_id, timeout=60)
    assert task["status"] == "succeeded", task["error"]
    assert task["result"]["assigned"] == {"CPU": 3.0}


# -- the callback listener, without Ray: only an authenticated worker naming its job gets in --


def test_callback_listener_admits_only_authenticated_workers_naming_a_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    from open_autoglm.executors import ray_executor

    monkeypatch.setattr(ray_executor, "_HELLO_TIMEOUT_S", 0.5)
    server = ray_executor._CallbackServer("127.0.0.1")
    try:
        inbox = server.expect("job-token")
        with pytest.raises(AuthenticationError):
            Client(server.address, authkey=b"not the key")

        stranger = Client(server.address, authkey=server.key)
        stranger.send_bytes(b"unknown-token")
        with pytest.raises(EOFError):
            stranger.recv_bytes()  # hung up on: it names no job that is waiting

        # The handshake itself never times out: only the hello timer can end this silence.
        # Were it not hung up on, the read would raise TimeoutError after 30 s instead.
        silent = socket.create_connection(server.address, timeout=30)
        silent.recv(1024)  # the challenge; then nothing is sent back
        assert silent.recv(1024) == b""  # hung up on after the hello timeout
        silent.close()

        worker = Client(server.address, authkey=server.key)
        worker.send_bytes(b"job-token")
        conn = inbox.get(timeout=5)
        worker.send_bytes(b"hello")
        assert conn.recv_bytes() == b"hello"
        worker.close()
        conn.close()
    finally:
        server.close()


def test_a_server_joins_an_existing_ray_cluster_and_leaves_it_running(tmp_path: Path) -> None:
    """``autoglm serve --executor ray --ray-address``: capacity is the cluster's, tasks run on
    its workers, and stopping the server disconnects without stopping the cluster."""
    import httpx

    from helpers.services import ServerProcess, ray_head

    with ray_head(cpus=2) as address:
        env = {
            "AUTOGLM_PLUGINS__DIRS": f'["{PLUGIN_DIR}"]',
            "AUTOGLM_EXECUTOR__CPU": "7",  # ignored when joining: the cluster has 2
            "RAY_AUTH_MODE": "token",
        }
        server = ServerProcess(
            tmp_path / "data", env=env, args=["--executor", "ray", "--ray-address", address]
        ).start(timeout=120)
        try:
            ready = httpx.get(server.url + "/readyz", timeout=10).json()["executor"]
            assert ready["backend"] == "ray"
            assert ready["ray"]["started_here"] is False and ready["ray"]["address"] == address
            assert ready["capacity"]["cpu"] == 2.0
            with httpx.Client(base_url=server.url, timeout=10) as client:
                submitted = client.post("/v1/tasks", json={"task_type": "probe", "timeout_s": 60})
                task = wait_task(client, submitted.json()["id"], timeout=90, interval=0.2)
            assert task["status"] == "succeeded", task.get("error")
            assert task["result"]["parent"] == "raylet"
            assert task["result"]["assigned"] == {"CPU": 1.0}
        finally:
            server.stop()
        assert server.proc is not None and server.proc.returncode is not None
        # The cluster outlived the server that joined it: a second client still gets work done.
        out = subprocess.run(
            [sys.executable, "-c", _JOIN_AND_RUN, address],
            env={**os.environ, "RAY_AUTH_MODE": "token"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0 and out.stdout.strip().endswith("42"), out.stderr[-2000:]


_JOIN_AND_RUN = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(ray.get(ray.remote(lambda: 42).remote()))
"""


def test_a_task_cancelled_before_submission_or_refused_by_ray_is_reported_once(
    tmp_path: Path, ray_cluster: object
) -> None:
    import threading

    from open_autoglm.executors.base import Job
    from open_autoglm.executors.ray_executor import _RayJob

    class Sink:
        def __init__(self) -> None:
            self.done_calls: list[tuple[str, Any]] = []
            self.finished = threading.Event()

        def event(self, task_id: str, kind: str, data: dict[str, Any]) -> None:
            pass

        def done(self, task_id: str, outcome: Any) -> None:
            self.done_calls.append((task_id, outcome))
            self.finished.set()

    rt = Runtime(_settings(tmp_path / "data")).start()
    try:
        executor = rt._executor
        assert isinstance(executor, RayExecutor)
        ttype = rt.plugins.task_type("probe")

        def never_served(conn: Any) -> Any:  # neither job gets as far as a worker
            raise AssertionError("no worker should connect")

        def job(task_id: str, cpu: float) -> Job:
            return Job(task_id, ttype, None, None, ttype.params_model(), {}, 1, 1, cpu=cpu)

        sink = Sink()
        early = _RayJob(job("early", 1.0), sink, executor, b"{}", never_served)
        early.cancel("user")  # before it was ever sent to Ray
        early.start()
        assert sink.finished.wait(10), "a job cancelled before submission was never reported"
        assert [(t, o.status.value) for t, o in sink.done_calls] == [("early", "cancelled")]

        sink = Sink()
        # Ray rejects num_cpus < 0
        _RayJob(job("refused", -1.0), sink, executor, b"{}", never_served).start()
        assert sink.finished.wait(10), "a job Ray refused was never reported"
        ((task_id, outcome),) = sink.done_calls
        assert task_id == "refused" and outcome.error["code"] == "worker_died"
        assert outcome.retryable and "Ray did not take the task" in outcome.error["message"]
    finally:
        rt.stop()
