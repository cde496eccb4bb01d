"""The asyncio SDK client (same methods as :class:`Client`, awaitable)."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import orjson

from open_autoglm.client.base import (
    RUN_TERMINAL,
    TERMINAL,
    BaseClient,
    media_type_of,
    model_files,
    raise_for_error,
)

__all__ = ["AsyncClient"]


class AsyncClient(BaseClient):
    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self._http.request(method, path, **kwargs)
        raise_for_error(resp)
        return resp.json() if resp.content else None

    async def submit(self, spec: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        return await self.request(
            "POST",
            "/v1/tasks",
            content=orjson.dumps(self._spec(spec, kwargs)),
            headers={"content-type": "application/json"},
        )

    async def submit_many(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Submit up to 1,000 tasks at once, all or none; returns them in order."""
        out = await self.request(
            "POST",
            "/v1/tasks/batch",
            content=orjson.dumps({"tasks": list(specs)}),
            headers={"content-type": "application/json"},
        )
        tasks: list[dict[str, Any]] = out["tasks"]
        return tasks

    async def get(self, task_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/tasks/{task_id}")

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/v1/tasks/{task_id}/cancel")

    async def prune_online(self, older_than_s: float) -> int:
        """Delete online inference records that ended more than ``older_than_s`` s ago;
        returns how many went (durable tasks stay)."""
        out = await self.request(
            "POST", "/v1/tasks/prune-online", params={"older_than_s": older_than_s}
        )
        return int(out["pruned"])

    async def infer(self, spec: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        out = await self.request(
            "POST",
            "/v1/infer",
            content=orjson.dumps(self._spec(spec, kwargs)),
            headers={"content-type": "application/json"},
        )
        return out["result"]

    async def fusion_train(
        self,
        table: Any,
        schema: dict[str, Any],
        *,
        strategy: str = "hybrid",
        text_model: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Submit ``fusion-train`` on ``table`` (rows, an artifact id or an input dict);
        returns the accepted task (``wait`` for its result)."""
        return await self.submit(
            self._fusion_train_spec(table, schema, strategy, text_model, params)
        )

    async def text_classifier_train(
        self, table: Any, *, model: str = "minilm", **params: Any
    ) -> dict[str, Any]:
        """Submit ``text-classifier-train``: fine-tune the encoder ``model`` on ``table``
        (rows, an artifact id or an input dict); returns the accepted task (``wait`` for its
        result, whose ``registered`` model serves ``text-classification``)."""
        return await self.submit(self._text_train_spec(table, model, params))

    async def fusion_predict(self, model: str, rows: Any) -> dict[str, Any]:
        """Classify ``rows`` with the fusion model ``model``: classes and probabilities."""
        result: dict[str, Any] = await self.infer(self._fusion_predict_spec(model, rows))
        return result

    async def explain(
        self, model: str | None = None, input: Any = None, *, task_id: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """Explain ``model``'s prediction for ``input`` (texts, a text pair, node ids), or the
        prediction the finished task ``task_id`` made: attributions plus picture artifact
        ids (``download_artifact`` fetches them)."""
        result: dict[str, Any] = await self.infer(self._explain_spec(model, input, task_id, params))
        return result

    async def temporal_train(
        self, events: Any, *, name: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """Submit a ``temporal-train`` job; see :meth:`Client.temporal_train`."""
        return await self.submit(self._temporal_train_spec(events, name, params))

    async def temporal_predict(
        self,
        model: str,
        *,
        links: builtins.list[dict[str, Any]] | None = None,
        top_k: builtins.list[dict[str, Any]] | None = None,
        append: builtins.list[Any] | None = None,
    ) -> dict[str, Any]:
        """Query a registered temporal model; see :meth:`Client.temporal_predict`."""
        result: dict[str, Any] = await self.infer(
            self._temporal_predict_spec(model, links, top_k, append)
        )
        return result

    async def list(
        self,
        *,
        status: str | None = None,
        task_type: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        async for task in self._paginate(
            "/v1/tasks", "tasks", {"status": status, "task_type": task_type}, page_size, limit
        ):
            yield task

    async def stream_events(
        self, task_id: str, timeout: float | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async for item in self._sse(f"/v1/tasks/{task_id}/events", timeout):
            yield item

    async def _sse(
        self, path: str, timeout: float | None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async with self._http.stream(
            "GET",
            path,
            headers={"accept": "text/event-stream"},
            timeout=httpx.Timeout(self.timeout, read=timeout or 60.0),
        ) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise_for_error(resp)
            kind = "message"
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    if kind == "end":
                        return
                    yield kind, orjson.loads(line[6:])

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        poll_s: float = 0.5,
        raise_on_failure: bool = True,
    ) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async for kind, data in self.stream_events(task_id, timeout=timeout):
                if kind == "status" and data.get("status") in TERMINAL:
                    break
        except (httpx.HTTPError, ValueError):
            pass
        while True:
            task = await self.get(task_id)
            if task["status"] in TERMINAL:
                return self._finished(task) if raise_on_failure else task
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {task['status']} after {timeout}s")
            await asyncio.sleep(poll_s)

    async def run(
        self, spec: dict[str, Any] | None = None, *, timeout: float | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        task = await self.submit(spec, **kwargs)
        return await self.wait(task["id"], timeout=timeout)

    # -- rulesets ----------------------------------------------------------------------------

    async def put_ruleset(self, name: str, ruleset: dict[str, Any]) -> dict[str, Any]:
        return await self.request(
            "PUT",
            f"/v1/rulesets/{name}",
            content=orjson.dumps(ruleset),
            headers={"content-type": "application/json"},
        )

    async def get_ruleset(self, name: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/rulesets/{name}")

    async def delete_ruleset(self, name: str) -> None:
        await self.request("DELETE", f"/v1/rulesets/{name}")

    async def events(self, task_id: str) -> builtins.list[dict[str, Any]]:
        return (await self.request("GET", f"/v1/tasks/{task_id}/events"))["events"]

    async def task_types(self) -> builtins.list[dict[str, Any]]:
        return (await self.request("GET", "/v1/task-types"))["task_types"]

    async def plugins(self) -> builtins.list[dict[str, Any]]:
        return (await self.request("GET", "/v1/plugins"))["plugins"]

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", "/healthz")

    async def list_rulesets(self) -> builtins.list[dict[str, Any]]:
        return (await self.request("GET", "/v1/rulesets"))["rulesets"]

    async def evaluate_ruleset(
        self,
        name: str,
        facts: builtins.list[dict[str, Any]],
        *,
        strategy: str = "depth",
        max_firings: int = 10_000,
    ) -> dict[str, Any]:
        body = {"facts": facts, "strategy": strategy, "max_firings": max_firings}
        return await self.request(
            "POST",
            f"/v1/rulesets/{name}/evaluate",
            content=orjson.dumps(body),
            headers={"content-type": "application/json"},
        )

    # -- models ------------------------------------------------------------------------------

    async def list_models(self) -> builtins.list[dict[str, Any]]:
        return (await self.request("GET", "/v1/models/registry"))["models"]

    async def get_model(self, name: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/models/registry/{name}")

    async def register_model(
        self, entry: dict[str, Any], *, replace: bool = False
    ) -> dict[str, Any]:
        return await self.request(
            "POST",
            "/v1/models/registry",
            params={"replace": "true"} if replace else None,
            content=orjson.dumps(entry),
            headers={"content-type": "application/json"},
        )

    async def delete_model(self, name: str) -> None:
        await self.request("DELETE", f"/v1/models/registry/{name}")

    # -- API keys (admin) --------------------------------------------------------------------

    async def create_key(
        self, owner: str, scopes: Sequence[str] = ("read", "submit"), *, name: str = ""
    ) -> dict[str, Any]:
        """Create an API key for ``owner``; the returned ``key`` is shown this once only."""
        return await self.request(
            "POST",
            "/v1/keys",
            content=orjson.dumps({"owner": owner, "scopes": list(scopes), "name": name}),
            headers={"content-type": "application/json"},
        )

    async def list_keys(self, *, include_revoked: bool = False) -> builtins.list[dict[str, Any]]:
        """Every API key's record (owner, scopes, dates); never the key itself."""
        params = {"include_revoked": "true"} if include_revoked else None
        return (await self.request("GET", "/v1/keys", params=params))["keys"]

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revoke an API key by its id; the server refuses it from then on."""
        return await self.request("POST", f"/v1/keys/{key_id}/revoke")

    async def download_artifact(self, artifact_id: str) -> bytes:
        """An artifact's bytes (weights, pictures, datasets)."""
        resp = await self._http.request("GET", f"/v1/artifacts/{artifact_id}/content")
        raise_for_error(resp)
        return resp.content

    async def upload_artifact(
        self, data: bytes, *, name: str = "", media_type: str | None = None
    ) -> dict[str, Any]:
        """Store bytes; the type is ``media_type``, else guessed from ``name``."""
        return await self.request(
            "POST",
            "/v1/artifacts",
            params={"name": name},
            content=data,
            headers={"content-type": media_type_of(name, media_type)},
        )

    async def upload_model(
        self,
        directory: str,
        *,
        name: str,
        task_types: builtins.list[str],
        replace: bool = False,
        **fields: Any,
    ) -> dict[str, Any]:
        files = {
            rel: (await self.upload_artifact(path.read_bytes(), name=rel))["id"]
            for rel, path in model_files(directory)
        }
        entry = {"name": name, "source": {"artifacts": files}, "task_types": task_types, **fields}
        return await self.register_model(entry, replace=replace)

    # -- workflows ---------------------------------------------------------------------------

    async def run_workflow(
        self, spec: dict[str, Any] | str, inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Start a workflow run (spec as a dict or YAML/JSON text); returns the stored run."""
        body = {"spec": spec, "inputs": inputs or {}}
        return await self.request(
            "POST",
            "/v1/workflows",
            content=orjson.dumps(body),
            headers={"content-type": "application/json"},
        )

    async def validate_workflow(
        self, spec: dict[str, Any] | str, inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {"spec": spec, "inputs": inputs or {}}
        return await self.request(
            "POST",
            "/v1/workflows/validate",
            content=orjson.dumps(body),
            headers={"content-type": "application/json"},
        )

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/workflows/runs/{run_id}")

    async def list_runs(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        async for run in self._paginate(
            "/v1/workflows/runs", "runs", {"status": status, "name": name}, page_size, limit
        ):
            yield run

    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/v1/workflows/runs/{run_id}/cancel")

    async def run_events(self, run_id: str, *, after: int = 0) -> builtins.list[dict[str, Any]]:
        out = await self.request(
            "GET", f"/v1/workflows/runs/{run_id}/events", params={"after": after}
        )
        return out["events"]

    async def stream_run_events(
        self, run_id: str, timeout: float | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async for item in self._sse(f"/v1/workflows/runs/{run_id}/events", timeout):
            yield item

    async def run_callbacks(self, run_id: str) -> builtins.list[dict[str, Any]]:
        out = await self.request("GET", f"/v1/workflows/runs/{run_id}/callbacks")
        return out["callbacks"]

    async def wait_run(
        self, run_id: str, *, timeout: float | None = None, poll_s: float = 0.5
    ) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = await self.get_run(run_id)
            if run["status"] in RUN_TERMINAL:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"workflow run {run_id} still {run['status']} after {timeout}s")
            await asyncio.sleep(poll_s)

    async def _paginate(
        self, path: str, key: str, filters: dict[str, Any], page_size: int, limit: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield ``page[key]`` items page by page, following ``next_cursor``."""
        params = self._page_params(filters, page_size)
        n = 0
        while True:
            page = await self.request("GET", path, params=params)
            for item in page[key]:
                yield item
                n += 1
                if limit is not None and n >= limit:
                    return
            if not page["next_cursor"]:
                return
            params["cursor"] = page["next_cursor"]
