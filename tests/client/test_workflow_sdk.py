"""The SDK's workflow methods, sync and async, against a real server process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from helpers.services import ServerProcess
from open_autoglm import errors
from open_autoglm.client import AsyncClient, Client

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "order_screening.yaml"
ORDERS = {"orders": [{"id": "a", "amount": 5000, "country": "de"}], "review_s": 0.05}


def test_sync_client_runs_lists_and_cancels(server: ServerProcess) -> None:
    with Client(server.url, api_key="sekret") as client:
        assert client.validate_workflow(EXAMPLE.read_text())["name"] == "order_screening"
        with pytest.raises(errors.ValidationError) as bad:
            client.run_workflow({"name": "x", "steps": [{"name": "a", "task": {"task_type": "?"}}]})
        assert "unknown task type" in bad.value.details[0]["msg"]

        run = client.run_workflow(EXAMPLE.read_text(), ORDERS)
        final = client.wait_run(run["id"], timeout=20, poll_s=0.05)
        assert final["status"] == "succeeded" and final["outputs"]["flagged"] == 1
        kinds = [k for k, _ in client.stream_run_events(run["id"])]
        assert kinds[-1] == "run"
        assert client.run_events(run["id"])[-1]["data"]["status"] == "succeeded"
        assert client.run_callbacks(run["id"]) == []

        slow = {"name": "slow", "steps": [{"name": "s", "task": {"task_type": "sleep", "params": {"seconds": 20}}}]}  # fmt: skip
        long_run = client.run_workflow(slow)
        assert client.cancel_run(long_run["id"])["status"] == "cancelled"
        assert [r["id"] for r in client.list_runs(name="slow")] == [long_run["id"]]
        assert [r["id"] for r in client.list_runs(status="cancelled", page_size=1)] == [
            long_run["id"]
        ]
        with pytest.raises(errors.NotFoundError):
            client.get_run("missing")


def test_async_client_runs_a_workflow(server: ServerProcess) -> None:
    async def main() -> None:
        async with AsyncClient(server.url, api_key="sekret") as client:
            run = await client.run_workflow(EXAMPLE.read_text(), ORDERS)
            kinds = [k async for k, _ in client.stream_run_events(run["id"], timeout=20)]
            assert kinds[-1] == "run"
            final = await client.wait_run(run["id"], timeout=5, poll_s=0.05)
            assert final["status"] == "succeeded"
            assert (await client.get_run(run["id"]))["outputs"]["report"]["held"] is True
            names = [r["name"] async for r in client.list_runs(limit=1)]
            assert names == ["order_screening"]
            assert (await client.run_events(run["id"]))[0]["kind"] == "run"

    asyncio.run(main())
