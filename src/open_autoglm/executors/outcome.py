"""Run a handler and turn what happened into an :class:`Outcome` (shared by every backend)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

import orjson

from open_autoglm.errors import (
    AutoGLMError,
    TaskCancelledError,
    TaskFailedError,
    TaskTimeoutError,
    ValidationError,
)
from open_autoglm.executors.base import Outcome, OutcomeStatus
from open_autoglm.tasks.base import TaskContext, TaskHandler

__all__ = ["run_batch_handler", "run_handler"]

log = logging.getLogger(__name__)


def run_handler(handler: TaskHandler, ctx: TaskContext) -> Outcome:
    """Call ``handler(ctx)``; never raises."""
    try:
        result = handler(ctx)
        orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)  # fail here, not in storage
    except TaskTimeoutError as exc:
        return Outcome(OutcomeStatus.FAILED, error=_err("timeout", exc), retryable=False)
    except TaskCancelledError as exc:
        return Outcome(OutcomeStatus.CANCELLED, error=_err("cancelled", exc))
    except TaskFailedError as exc:
        return Outcome(OutcomeStatus.FAILED, error=_err(exc.code, exc), retryable=exc.retryable)
    except ValidationError as exc:
        return Outcome(OutcomeStatus.FAILED, error=_err(exc.code, exc), retryable=False)
    except AutoGLMError as exc:
        return Outcome(OutcomeStatus.FAILED, error=_err(exc.code, exc), retryable=False)
    except TypeError as exc:
        if "JSON serializable" in str(exc) or "not JSON" in str(exc):
            return Outcome(
                OutcomeStatus.FAILED,
                error={"code": "bad_result", "message": f"result is not JSON-serialisable: {exc}"},
            )
        return _unexpected(exc)
    except Exception as exc:
        return _unexpected(exc)
    return Outcome(OutcomeStatus.SUCCEEDED, result=result)


def run_batch_handler(
    batch_handler: Callable[[list[TaskContext]], list[Any]], ctxs: list[TaskContext]
) -> list[Outcome]:
    """Call ``batch_handler(ctxs)``; a slot holding an exception fails only that task."""
    if not ctxs:
        return []
    try:
        results = batch_handler(ctxs)
    except Exception as exc:  # the batch itself failed: every member fails alike
        return [run_handler(_Raise(exc), ctxs[0])] * len(ctxs)
    if not isinstance(results, list) or len(results) != len(ctxs):
        bad = Outcome(
            OutcomeStatus.FAILED,
            error={
                "code": "bad_result",
                "message": "batch handler returned the wrong number of results",
            },
        )
        return [bad] * len(ctxs)
    return [
        run_handler(_Raise(r) if isinstance(r, BaseException) else _Value(r), c)
        for r, c in zip(results, ctxs, strict=True)
    ]


class _Value:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self, _: TaskContext) -> Any:
        return self.value


class _Raise:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __call__(self, _: TaskContext) -> Any:
        raise self.exc


def _err(code: str, exc: AutoGLMError) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "message": exc.message}
    if exc.details:
        out["details"] = exc.details
    return out


def _unexpected(exc: Exception) -> Outcome:
    # Unexpected exceptions are treated as transient: max_retries bounds the retries.
    log.warning("handler raised %s: %s", type(exc).__name__, exc)
    return Outcome(
        OutcomeStatus.FAILED,
        error={
            "code": "handler_error",
            "message": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        },
        retryable=True,
    )
