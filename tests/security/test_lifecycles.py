"""Abandoned work and slow clients, tried as an attacker would against a real server.

A client that hangs up must not leave its task running (holding its CPU slot); a client
that sends its request a byte at a time must be cut off at the read deadline; one address
may not hold more than its share of connections or event streams. Everything targets
127.0.0.1 with bounded counts.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers.services import ServerProcess

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 24
MAX_STREAMS = 2

ENV = {
    "AUTOGLM_API__LIFECYCLE__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "AUTOGLM_API__LIFECYCLE__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "AUTOGLM_API__LIFECYCLE__MAX_CONNECTIONS_PER_CLIENT": str(MAX_CONNECTIONS),
    "AUTOGLM_API__LIFECYCLE__MAX_STREAMS_PER_CLIENT": str(MAX_STREAMS),
    "AUTOGLM_EXECUTOR__CPU": "1",  # one sleep holds the only CPU slot
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("lifecycle") / "data", env=ENV).start()
    try:
        yield proc
    finally:
        proc.stop()


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    sock.settimeout(limit_s)
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks), time.monotonic()


def _post_head(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()


def _running(server: ServerProcess) -> int:
    return int(httpx.get(server.url + "/readyz", timeout=10).json()["scheduler"]["running"])


def _wait(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_disconnected_infer_is_cancelled_and_frees_its_slot(server: ServerProcess) -> None:
    body = json.dumps({"task_type": "sleep", "params": {"seconds": 86_400}}).encode()
    sock = _connect(server)
    sock.sendall(_post_head("/v1/infer", body) + body)
    _wait(lambda: _running(server) == 1)
    gone_at = time.time()
    sock.close()  # the client hangs up mid-request

    def cancelled() -> list[dict]:
        resp = httpx.get(
            server.url + "/v1/tasks",
            params={"status": "cancelled", "task_type": "sleep"},
            timeout=10,
        )
        return list(resp.json()["tasks"])

    _wait(lambda: bool(cancelled()))
    (task,) = cancelled()
    assert task["error"]["message"] == "client disconnected"
    assert task["finished_at"] - gone_at < 1.0  # cancelled within a second of the hang-up
    # The only CPU slot is free again: another sleep runs at once.
    resp = httpx.post(
        server.url + "/v1/infer",
        json={"task_type": "sleep", "params": {"seconds": 0}},
        timeout=30,
    )
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded"


def test_slowloris_head_is_closed_at_the_header_deadline(server: ServerProcess) -> None:
    sock = _connect(server)
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    closed = None
    for byte in b"Host: 127.0.0.1\r\nX-Slow: " + b"a" * 40:
        try:
            sock.sendall(bytes([byte]))  # one byte every 0.25 s, never the end of the head
        except OSError:
            break
        sock.settimeout(0.25)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        closed = time.monotonic()
        rest, _ = _read_until_closed(sock, 5)
        data += rest
        break
    sock.close()
    assert closed is not None, "the server never closed the slow connection"
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b'"request_timeout"' in data
    # Closed at the deadline: dribbling bytes does not extend it.
    assert HEADER_TIMEOUT_S - 0.1 <= closed - started < HEADER_TIMEOUT_S + 1.5


def test_slow_body_is_closed_at_the_body_deadline(server: ServerProcess) -> None:
    sock = _connect(server)
    body = json.dumps({"task_type": "echo", "input": "x" * 200}).encode()
    sock.sendall(_post_head("/v1/infer", body) + body[:10])
    started = time.monotonic()
    data, closed = _read_until_closed(sock, 10)
    sock.close()
    assert data.startswith(b"HTTP/1.1 408 ") and b"body" in data
    assert BODY_TIMEOUT_S - 0.1 <= closed - started < BODY_TIMEOUT_S + 1.5


def test_many_slow_connections_stay_bounded_per_client(server: ServerProcess) -> None:
    """Twice the cap of connections that never finish their head: the cap's worth are cut
    off at the header deadline, the rest refused at once with 429; then all is well."""
    n = 2 * MAX_CONNECTIONS
    socks = [_connect(server) for _ in range(n)]
    started = time.monotonic()
    for s in socks:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    answers = [_read_until_closed(s, 10) for s in socks]
    for s in socks:
        s.close()
    statuses = [data[9:12] for data, _ in answers]
    assert statuses.count(b"429") >= n - MAX_CONNECTIONS
    assert set(statuses) == {b"408", b"429"}
    assert all(b"too_many_connections" in d for d, _ in answers if d[9:12] == b"429")
    assert max(at for _, at in answers) - started < HEADER_TIMEOUT_S + 3
    # Their slots are given back: a normal client is served again.
    _wait(lambda: httpx.get(server.url + "/healthz", timeout=5).status_code == 200)


def test_streams_per_client_are_capped(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        task = client.post(
            "/v1/tasks",
            json={"task_type": "sleep", "params": {"seconds": 3600}, "resources": {"cpu": 0}},
        ).json()
        url = f"/v1/tasks/{task['id']}/events"
        sse = {"Accept": "text/event-stream"}
        with contextlib.ExitStack() as stack:
            for _ in range(MAX_STREAMS):
                resp = stack.enter_context(client.stream("GET", url, headers=sse))
                assert resp.status_code == 200
            refused = client.get(url, headers=sse)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_streams"
            assert "max_streams_per_client" in refused.json()["error"]["message"]
            assert refused.headers["Retry-After"] == "1"

        # Closed streams give their slots back (the server sees the hang-ups shortly).
        def reopened() -> bool:
            with client.stream("GET", url, headers=sse) as resp:
                return resp.status_code == 200

        _wait(reopened)
        assert client.post(f"/v1/tasks/{task['id']}/cancel").status_code == 200


def test_docs_name_every_setting_with_its_default_and_their_example_loads(
    tmp_path: Path,
) -> None:
    from open_autoglm.config import LifecycleSettings, load_settings

    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    for name, field in LifecycleSettings.model_fields.items():
        assert f"| `api.lifecycle.{name}` | `{field.default:g}`" in doc, name
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "autoglm.toml").write_text(example)
    s = load_settings(tmp_path / "autoglm.toml").api.lifecycle
    assert (s.header_timeout_s, s.max_streams_per_client, s.shutdown_grace_s) == (5, 4, 20)
