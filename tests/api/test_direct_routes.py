"""The direct route table (api/middleware.py: DirectRoutes) and the coalescing transport
(api/http.py): the hot routes answer exactly as through the router, and a response's writes
leave as one."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.testclient import TestClient

from open_autoglm.api.http import CoalescingTransport
from open_autoglm.api.middleware import DirectRoutes


def _direct_table(client: TestClient) -> dict[tuple[str, str], Any]:
    (middleware,) = [m for m in client.app.user_middleware if m.cls is DirectRoutes]  # type: ignore[attr-defined]
    routes: dict[tuple[str, str], Any] = middleware.kwargs["routes"]
    return routes


def test_direct_routes_are_declared_on_the_router_too(api: TestClient) -> None:
    table = _direct_table(api)
    assert set(table) == {("POST", "/v1/embeddings"), ("POST", "/v1/infer")}
    paths = api.get("/openapi.json").json()["paths"]
    for (method, path), endpoint in table.items():
        operation = paths[path][method.lower()]  # documented, so also routed
        # The same endpoint function behind both (FastAPI names operations after it).
        assert operation["operationId"].startswith(endpoint.__wrapped__.__name__ + "_")


def _strip_ids(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: _strip_ids(v) for k, v in body.items() if k not in ("id", "task_id")}
    return body


def test_direct_and_routed_answers_agree(api: TestClient) -> None:
    # Under a root_path DirectRoutes steps aside: the router answers the same requests.
    routed = TestClient(api.app, root_path="/api")
    cases: list[tuple[str, Any]] = [
        ("/v1/infer", {"task_type": "echo", "input": {"x": 1}}),  # succeeds
        ("/v1/infer", {"task_type": "echo", "bogus": 1}),  # 422, names the field
        ("/v1/infer", {"task_type": "echo", "priority": 99}),  # 422, out of range
        ("/v1/embeddings", {"model": "nope", "input": "hi"}),  # 404, OpenAI's shape
        ("/v1/embeddings", {"model": "", "input": "hi"}),  # 400, OpenAI's shape
        ("/v1/embeddings", {"input": "hi"}),  # 400: model missing
    ]
    statuses = []
    for path, body in cases:
        direct = api.post(path, json=body)
        through_router = routed.post("/api" + path, json=body)
        assert direct.status_code == through_router.status_code, (path, body)
        assert _strip_ids(direct.json()) == _strip_ids(through_router.json()), (path, body)
        statuses.append(direct.status_code)
    assert statuses == [200, 422, 422, 404, 400, 400]
    # Malformed JSON, and a method the table does not hold (the router's 405).
    bad = api.post("/v1/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["loc"] == ["body"]
    assert api.get("/v1/embeddings").status_code == 405


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_writes_of_one_loop_iteration_leave_as_one() -> None:
    async def scenario() -> tuple[list[bytes], ...]:
        raw = _Recorder()
        transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is raw's
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"")
        transport.write(b"body")
        assert raw.writes == []  # nothing yet: the iteration is not over
        await asyncio.sleep(0)
        one = list(raw.writes)
        transport.write(b"chunk-1")  # a later iteration: its own write
        await asyncio.sleep(0)
        transport.writelines([b"a", b"b"])
        transport.close()  # pending bytes go out before the close
        closed = list(raw.writes)
        aborted_raw = _Recorder()
        other = CoalescingTransport(aborted_raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        other.write(b"dropped")
        other.abort()  # as the transport's own buffer: dropped
        await asyncio.sleep(0)
        return one, closed, aborted_raw.writes

    one, closed, aborted = asyncio.run(scenario())
    assert one == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert closed == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"chunk-1", b"ab"]
    assert aborted == []
