"""The SDK against a live server on 127.0.0.1 (a real process, API key required)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from open_autoglm import errors
from open_autoglm.client import AsyncClient, Client


@pytest.fixture
def client(server):
    with Client(server.url, api_key="sekret") as c:
        yield c


def test_api_key_required(server):
    with Client(server.url) as anon, pytest.raises(errors.AuthenticationError):
        anon.submit(task_type="echo", input=1)
    with Client(server.url, api_key="wrong") as bad, pytest.raises(errors.AuthenticationError):
        bad.get("x")


def test_submit_wait_get(client):
    task = client.submit({"task_type": "echo", "input": {"hello": "world"}})
    assert task["status"] == "queued" and task["created"]
    done = client.wait(task["id"], timeout=10)
    assert done["status"] == "succeeded" and done["result"] == {"hello": "world"}
    assert client.get(task["id"])["result"] == {"hello": "world"}


def test_submit_many_all_or_none(client):
    tasks = client.submit_many([{"task_type": "echo", "input": i} for i in range(20)])
    assert [client.wait(t["id"], timeout=10)["result"] for t in tasks] == list(range(20))
    with pytest.raises(errors.ValidationError) as info:
        client.submit_many([{"task_type": "echo"}, {"task_type": "echo", "colour": "red"}])
    assert ["tasks", 1, "colour"] in [d["loc"] for d in info.value.details]


def test_wait_streams_progress_events(client):
    task = client.submit(task_type="sleep", params={"seconds": 2.2})
    kinds = [kind for kind, _ in client.stream_events(task["id"], timeout=20)]
    assert "progress" in kinds and kinds[-1] == "status"


def test_infer_returns_result_and_raises_typed_errors(client):
    assert client.infer(task_type="echo", input=[1, 2, 3]) == [1, 2, 3]
    with pytest.raises(errors.ValidationError) as exc:
        client.infer(task_type="echo", surprise=True)
    assert exc.value.details[0]["loc"] == ["surprise"]
    with pytest.raises(errors.TaskTimeoutError):
        client.infer(task_type="sleep", params={"seconds": 10}, timeout_s=0.2)


def test_an_answered_online_task_reads_back_at_once(client):
    """/v1/infer answers before the task's log record is committed; reads must not notice."""
    for i in range(30):
        out = client.request(
            "POST",
            "/v1/infer",
            content=orjson.dumps({"task_type": "echo", "input": i}),
            headers={"content-type": "application/json"},
        )
        assert out["status"] == "succeeded" and out["result"] == i
        assert client.get(out["id"])["result"] == i  # at once: live or stored, never missing
        statuses = [e["data"]["status"] for e in client.events(out["id"]) if e["kind"] == "status"]
        assert statuses == ["queued", "running", "succeeded"]


def test_failed_task_raises_on_wait(client):
    task = client.submit(task_type="flaky", params={"fail_times": 9})
    with pytest.raises(errors.TaskFailedError, match="flaky failure"):
        client.wait(task["id"], timeout=10)


def test_cancel_and_not_found(client):
    task = client.submit(task_type="sleep", params={"seconds": 30})
    client.cancel(task["id"])
    assert client.wait(task["id"], timeout=10, raise_on_failure=False)["status"] == "cancelled"
    with pytest.raises(errors.NotFoundError):
        client.get("0" * 32)


def test_list_iterates_pages(client):
    ids = {
        client.submit(task_type="echo", input=i, metadata={"batch": "pages"})["id"]
        for i in range(7)
    }
    for tid in ids:
        client.wait(tid, timeout=10)
    seen = [t["id"] for t in client.list(task_type="echo", page_size=2)]
    assert ids <= set(seen) and len(seen) == len(set(seen))
    succeeded = list(client.list(status="succeeded", task_type="echo", page_size=3, limit=4))
    assert len(succeeded) == 4 and all(t["status"] == "succeeded" for t in succeeded)


def test_async_client(server):
    async def go():
        async with AsyncClient(server.url, api_key="sekret") as c:
            tasks = await asyncio.gather(*(c.submit(task_type="echo", input=i) for i in range(10)))
            done = await asyncio.gather(*(c.wait(t["id"], timeout=10) for t in tasks))
            assert [d["result"] for d in done] == list(range(10))
            assert await c.infer(task_type="echo", input="x") == "x"
            many = await c.submit_many([{"task_type": "echo", "input": i} for i in range(3)])
            assert [(await c.wait(t["id"], timeout=10))["result"] for t in many] == [0, 1, 2]
            listed = [t async for t in c.list(limit=5)]
            assert len(listed) == 5
            assert await c.prune_online(3600) == 0  # nothing here ended an hour ago

    asyncio.run(go())


def test_task_types_and_plugins(client):
    names = {t["name"] for t in client.task_types()}
    assert {"echo", "sleep", "record", "flaky"} <= names
    plugins = {p["name"]: p for p in client.plugins()}
    assert plugins["recorder"]["status"] == "initialized"
    assert plugins["broken"]["status"] == "failed"
    assert "missing credentials" in plugins["broken"]["reason"]


def test_metrics_exposes_queue_and_latency(server):
    import httpx

    text = httpx.get(server.url + "/metrics", headers={"X-API-Key": "sekret"}).text
    assert 'autoglm_queue_depth{priority="9"}' in text
    assert "autoglm_task_latency_seconds_bucket" in text
    assert 'autoglm_executor_utilization{executor="local",resource="cpu"}' in text
