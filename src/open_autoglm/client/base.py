"""What the sync and async clients share: URLs, headers and error mapping."""

from __future__ import annotations

import os
from typing import Any

import httpx

from open_autoglm import errors
from open_autoglm.spec.task import TERMINAL_STATUSES

__all__ = [
    "RUN_TERMINAL",
    "TERMINAL",
    "BaseClient",
    "media_type_of",
    "model_files",
    "raise_for_error",
]

TERMINAL = TERMINAL_STATUSES
RUN_TERMINAL = TERMINAL | {"timed_out"}  # a workflow run can also time out

_BY_CODE: dict[str, type[errors.AutoGLMError]] = {
    "validation_error": errors.ValidationError,
    "outbound_refused": errors.OutboundRefusedError,
    "not_found": errors.NotFoundError,
    "conflict": errors.ConflictError,
    "unauthorized": errors.AuthenticationError,
    "forbidden": errors.PermissionDeniedError,
    "forbidden_origin": errors.PermissionDeniedError,
    "unsupported_media_type": errors.UnsupportedMediaTypeError,
    "payload_too_large": errors.PayloadTooLargeError,
    "unavailable": errors.UnavailableError,
    "plugin_error": errors.PluginError,
    "storage_error": errors.StorageError,
    "timeout": errors.TaskTimeoutError,
    "cancelled": errors.TaskCancelledError,
}


def raise_for_error(resp: httpx.Response) -> None:
    """Raise the typed error the server described; no-op for 2xx."""
    if resp.status_code < 400:
        return
    try:
        err = resp.json().get("error", {})
    except Exception:
        err = {}
    if not isinstance(err, dict):
        err = {"message": str(err)}
    code = err.get("code", "")
    message = err.get("message") or f"HTTP {resp.status_code}"
    details = err.get("details") or []
    retry_after = float(resp.headers.get("Retry-After", "1") or 1)
    if resp.status_code == 429:
        cls: type[errors.AutoGLMError] = {
            "queue_full": errors.AdmissionError,
            "bulkhead_full": errors.BulkheadFullError,
            "too_many_streams": errors.TooManyStreamsError,
        }.get(code, errors.RateLimitedError)
        raise cls(message, retry_after=retry_after)  # type: ignore[call-arg]
    if code == "circuit_open":
        raise errors.CircuitOpenError(message, retry_after=retry_after)
    if resp.status_code == 403 and code == "blocked":
        raise errors.PolicyBlockedError(message, rule=err.get("rule", ""), details=details)
    cls = _BY_CODE.get(code, errors.AutoGLMError)
    if cls is errors.AutoGLMError and resp.status_code >= 500:
        cls = errors.TaskFailedError if code else errors.AutoGLMError
    raise cls(message, details=details)


class BaseClient:
    def __init__(self, base_url: str | None, api_key: str | None, timeout: float) -> None:
        self.base_url = (
            base_url or os.environ.get("AUTOGLM_URL") or "http://127.0.0.1:8000"
        ).rstrip("/")
        key = api_key or os.environ.get("AUTOGLM_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = timeout

    @staticmethod
    def _spec(spec: dict[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        body = dict(spec or {})
        body.update(kwargs)
        return body

    @staticmethod
    def _table(table: Any) -> Any:
        """A table input: rows (a list of dicts), an artifact id, or an input dict as is."""
        if isinstance(table, list):
            return {"rows": table}
        if isinstance(table, str):
            return {"artifact": table}
        return table

    @classmethod
    def _fusion_train_spec(
        cls,
        table: Any,
        schema: dict[str, Any],
        strategy: str,
        text_model: str | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        body = {"schema": schema, "strategy": strategy, **params}
        if text_model is not None:
            body["text_model"] = text_model
        return {"task_type": "fusion-train", "input": cls._table(table), "params": body}

    @classmethod
    def _text_train_spec(cls, table: Any, model: str, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "task_type": "text-classifier-train",
            "model": model,
            "input": cls._table(table),
            "params": params,
        }

    @classmethod
    def _fusion_predict_spec(cls, model: str, rows: Any) -> dict[str, Any]:
        return {"task_type": "fusion-predict", "model": model, "input": cls._table(rows)}

    @staticmethod
    def _explain_spec(
        model: str | None, input: Any, task_id: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {"task_type": "explain", "params": dict(params)}
        if model is not None:
            spec["model"] = model
        if input is not None:
            spec["input"] = input
        if task_id is not None:
            spec["params"]["task_id"] = task_id
        return spec

    @staticmethod
    def _temporal_train_spec(
        events: Any, name: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        """A temporal-train job: ``events`` is a stream object or ``{"artifact": id}``."""
        if isinstance(events, list):
            events = {"events": events}
        return {
            "task_type": "temporal-train",
            "input": events,
            "params": {**params, **({"name": name} if name else {})},
        }

    @staticmethod
    def _temporal_predict_spec(
        model: str,
        links: list[dict[str, Any]] | None,
        top_k: list[dict[str, Any]] | None,
        append: list[Any] | None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"links": links or [], "top_k": top_k or []}
        if append:
            params["append"] = append
        return {"task_type": "temporal-predict", "model": model, "params": params}

    @staticmethod
    def _page_params(filters: dict[str, Any], page_size: int) -> dict[str, Any]:
        """Query parameters of a list route: the filters that are set, and the page size."""
        params = {k: v for k, v in filters.items() if v}
        params["limit"] = page_size
        return params

    @staticmethod
    def _finished(task: dict[str, Any]) -> dict[str, Any]:
        if task["status"] == "failed":
            err = task.get("error") or {}
            cls = (
                errors.TaskTimeoutError if err.get("code") == "timeout" else errors.TaskFailedError
            )
            raise cls(f"task {task['id']} failed: {err.get('message', '')}", details=[err])
        if task["status"] == "cancelled":
            raise errors.TaskCancelledError(f"task {task['id']} was cancelled")
        return task


def media_type_of(name: str, given: str | None = None) -> str:
    """The content type to upload ``name`` with: ``given``, else guessed from the name, else
    ``application/octet-stream``."""
    import mimetypes

    return given or mimetypes.guess_type(name)[0] or "application/octet-stream"


def model_files(directory: str | os.PathLike[str]) -> list[tuple[str, Any]]:
    """Files of a model directory to upload, as (relative name, path), at most one folder deep."""
    from pathlib import Path

    root = Path(directory)
    if not (root / "config.json").is_file():
        raise errors.ValidationError(f"{root} is not a model directory (no config.json)")
    return [
        (p.relative_to(root).as_posix(), p)
        for p in sorted([*root.glob("*"), *root.glob("*/*")])
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
