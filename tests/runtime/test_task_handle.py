"""runtime.track(task_id): one handle follows a task, live or stored, blocking or awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from open_autoglm.runtime import Runtime


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(executor={"cpu": 1, "threads": 2})


def test_a_live_task_is_followed_to_its_stored_end(rt: Runtime) -> None:
    task, _ = rt.submit({"task_type": "sleep", "params": {"seconds": 0.2}}).result(10)
    handle = rt.track(task["id"])
    assert handle.live is not None  # still queued or running
    final = handle.result(10)
    assert final["status"] == "succeeded" and final["result"]["slept"] >= 0.2
    assert rt.storage.get_task(task["id"])["status"] == "succeeded"  # stored when answered


def test_a_stored_task_is_read_and_the_handle_is_awaitable(rt: Runtime) -> None:
    done = rt.run({"task_type": "echo", "input": 7}, timeout=10)
    handle = rt.track(done["id"])
    assert handle.live is None
    assert handle.result()["result"] == 7

    async def follow() -> dict:
        return await rt.track(done["id"])

    assert asyncio.run(follow())["result"] == 7


def test_an_online_task_is_awaited_until_answered(rt: Runtime) -> None:
    async def run() -> dict:
        task, _ = rt.submit({"task_type": "echo", "input": "hi"}, durable=False).result(10)
        return await rt.track(task["id"])

    final = asyncio.run(run())
    assert final["status"] == "succeeded" and final["result"] == "hi"
