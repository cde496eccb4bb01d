"""Signed callbacks against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from open_autoglm.resilience.outbound import OutboundPolicy
from open_autoglm.spec.workflow import validate_workflow
from open_autoglm.workflows.callbacks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    callback_body,
    deliver_callback,
    sign,
    verify_signature,
)
from open_autoglm.workflows.local_runner import LocalRunner
from open_autoglm.workflows.protocol import RunStatus, SendCallback

SECRET = "whsec-test"
# The receivers listen on loopback, which the outbound policy refuses unless opened.
LOOPBACK = OutboundPolicy.from_lists(networks=["127.0.0.0/8"])


class Receiver:
    """Accepts POSTs, checks the signature, and fails the first ``fail_first`` deliveries."""

    def __init__(self, fail_first: int = 0, status_on_fail: int = 503) -> None:
        self.fail_first = fail_first
        self.status_on_fail = status_on_fail
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                valid = verify_signature(body, dict(self.headers), SECRET)
                with receiver.lock:
                    n = len(receiver.received)
                    receiver.received.append(
                        {"body": json.loads(body), "valid": valid, "headers": dict(self.headers)}
                    )
                status = (
                    401
                    if not valid
                    else receiver.status_on_fail
                    if n < receiver.fail_first
                    else 204
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=2) as r:
        yield r


def test_sign_and_verify_with_tolerance_window() -> None:
    body = callback_body({"b": 1, "a": [1, 2]})
    assert body == b'{"a":[1,2],"b":1}'
    headers = sign(body, SECRET, timestamp=1_000_000)
    assert headers[TIMESTAMP_HEADER] == "1000000"
    assert headers[SIGNATURE_HEADER].startswith("sha256=") and len(headers[SIGNATURE_HEADER]) == 71
    assert verify_signature(body, headers, SECRET, now=1_000_100)
    assert not verify_signature(body, headers, SECRET, now=1_000_301)  # too old: replay
    assert not verify_signature(body, headers, SECRET, now=999_000)  # from the future
    assert not verify_signature(body + b" ", headers, SECRET, now=1_000_000)  # body changed
    assert not verify_signature(body, headers, "other", now=1_000_000)
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify_signature(body, lowered, SECRET, now=1_000_000)  # header names are case-free
    assert not verify_signature(body, {}, SECRET, now=1_000_000)


def test_delivery_retries_until_the_receiver_accepts(receiver: Receiver) -> None:
    sleeps: list[float] = []
    attempts = deliver_callback(
        receiver.url,
        {"status": "succeeded"},
        SECRET,
        backoff_s=0.01,
        sleep=sleeps.append,
        policy=LOOPBACK,
    )
    assert [a.status for a in attempts] == [503, 503, 204]
    assert [a.error for a in attempts] == ["HTTP 503", "HTTP 503", None]
    assert attempts[-1].ok and all(a.duration_s > 0 for a in attempts)
    assert sleeps == [0.01, 0.02]
    assert [r["valid"] for r in receiver.received] == [True, True, True]
    assert attempts[0].to_dict()["attempt"] == 1


def test_delivery_stops_on_a_rejecting_4xx() -> None:
    with Receiver(fail_first=5, status_on_fail=400) as r:
        attempts = deliver_callback(r.url, {"x": 1}, SECRET, sleep=lambda s: None, policy=LOOPBACK)
    assert [a.status for a in attempts] == [400]


def test_delivery_records_network_errors() -> None:
    with Receiver() as r:
        url = r.url
    attempts = deliver_callback(
        url, {"x": 1}, SECRET, max_attempts=2, sleep=lambda s: None, timeout_s=1, policy=LOOPBACK
    )
    assert [a.status for a in attempts] == [None, None]
    assert all(a.error and "ConnectError" in a.error for a in attempts)


def test_wrong_secret_is_rejected_by_the_receiver(receiver: Receiver) -> None:
    attempts = deliver_callback(
        receiver.url, {"x": 1}, "not-the-secret", sleep=lambda s: None, policy=LOOPBACK
    )
    assert [a.status for a in attempts] == [401]
    assert receiver.received[0]["valid"] is False


def test_workflow_run_callback_delivered_signed(receiver: Receiver) -> None:
    spec = validate_workflow(
        {
            "name": "notify",
            "callback_url": receiver.url,
            "callback_secret": SECRET,
            "steps": [{"name": "a", "task": {"task_type": "echo", "input": 41}}],
            "outputs": {"answer": "${steps.a.output + 1}"},
        },
        {"echo"},
    )
    deliveries: list[list[Any]] = []

    def on_callback(cb: SendCallback) -> None:
        deliveries.append(
            deliver_callback(
                cb.url, cb.payload, cb.secret, event=cb.event, backoff_s=0.01, policy=LOOPBACK
            )
        )

    result = LocalRunner(lambda t: t["input"], on_callback=on_callback).run(spec, run_id="r-1")
    assert result.status is RunStatus.SUCCEEDED
    (attempts,) = deliveries
    assert [a.status for a in attempts] == [503, 503, 204]
    final = receiver.received[-1]
    assert final["valid"] is True
    assert final["headers"]["X-AutoGLM-Event"] == "run.finished"
    assert final["body"] == {
        "run_id": "r-1",
        "workflow": "notify",
        "status": "succeeded",
        "error": None,
        "outputs": {"answer": 42},
        "steps": {"a": "succeeded"},
    }
