"""Run-finished callbacks through the platform, to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.runtime import Runtime
from open_autoglm.workflows.callbacks import verify_signature


class Receiver:
    """Answers 503 to the first ``fail_first`` requests, then 200; keeps every request."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def _client(tmp_path: Any, **workflows: Any) -> TestClient:
    settings = make_settings(
        tmp_path / "data",
        workflows={"callback_backoff_s": 0.05, "callback_timeout_s": 5, **workflows},
        outbound={"allow_networks": ["127.0.0.0/8"]},  # the receiver listens on loopback
    )
    return TestClient(create_app(runtime=Runtime(settings)))


def _callbacks(api: TestClient, run_id: str, n_attempts: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cbs = api.get(f"/v1/workflows/runs/{run_id}/callbacks").json()["callbacks"]
        if cbs and len(cbs[0]["deliveries"]) >= n_attempts and cbs[0]["status"] != "pending":
            return cbs
        time.sleep(0.03)
    raise AssertionError(f"callback attempts never reached {n_attempts}: {cbs}")


def test_signed_callback_retried_until_delivered(tmp_path: Any, receiver: Receiver) -> None:
    spec = {
        "name": "notify",
        "callback_url": receiver.url,
        "callback_secret": "per-workflow-secret",
        "steps": [{"name": "a", "task": {"task_type": "echo", "input": {"x": 1}}}],
    }
    with _client(tmp_path, callback_secret="global-secret") as api:
        run_id = api.post("/v1/workflows", json={"spec": spec}).json()["id"]
        cbs = _callbacks(api, run_id, 3)
        run_text = api.get(f"/v1/workflows/runs/{run_id}").text
        listed = api.get("/v1/workflows/runs").text
    assert "per-workflow-secret" not in run_text and "per-workflow-secret" not in listed
    assert len(cbs) == 1
    cb = cbs[0]
    assert cb["event"] == "run.finished" and cb["status"] == "delivered" and cb["attempts"] == 3
    assert [d["status_code"] for d in cb["deliveries"]] == [503, 503, 200]
    assert [d["attempt"] for d in cb["deliveries"]] == [1, 2, 3]
    assert cb["deliveries"][0]["error"] == "HTTP 503" and cb["deliveries"][2]["error"] is None
    assert "secret" not in orjson.dumps(cb).decode()

    assert len(receiver.requests) == 3
    for headers, body in receiver.requests:
        assert verify_signature(body, headers, "per-workflow-secret")
        assert not verify_signature(body, headers, "global-secret")
        assert headers["X-AutoGLM-Event"] == "run.finished"
    payload = orjson.loads(receiver.requests[-1][1])
    assert payload["run_id"] == run_id
    assert payload["status"] == "succeeded"
    assert payload["outputs"] == {"a": {"x": 1}}


def test_global_secret_signs_and_failures_are_recorded(tmp_path: Any) -> None:
    receiver = Receiver(fail_first=100)
    spec = {
        "name": "notify_fail",
        "callback_url": receiver.url,
        "steps": [{"name": "a", "task": {"task_type": "echo"}}],
    }
    try:
        with _client(tmp_path, callback_secret="global-secret", callback_max_attempts=3) as api:
            run_id = api.post("/v1/workflows", json={"spec": spec}).json()["id"]
            cb = _callbacks(api, run_id, 3)[0]
    finally:
        receiver.close()
    assert cb["status"] == "failed"
    assert [d["status_code"] for d in cb["deliveries"]] == [503, 503, 503]
    assert all(verify_signature(b, h, "global-secret") for h, b in receiver.requests)
