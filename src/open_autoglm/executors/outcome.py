"""Run a handler and turn what happened into an :class:`Outcome` (shared by every backend)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from open_autoglm.errors import (
    AdmissionError,
    AutoGLMError,
    RateLimitedError,
    TaskCancelledError,
    TaskFailedError,
    TaskTimeoutError,
    UnavailableError,
    ValidationError,
)
from open_autoglm.executors.base import Outcome, OutcomeStatus
from open_autoglm.tasks.base import BatchResults, TaskContext, TaskHandler

__all__ = ["iter_batch_outcomes", "run_handler"]

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
    except (UnavailableError, AdmissionError, RateLimitedError) as exc:
        # A dependency down, its circuit open, its bulkhead full or its rate spent: another
        # attempt later may well succeed (for tasks that allow retries: max_retries).
        return Outcome(OutcomeStatus.FAILED, error=_err(exc.code, exc), retryable=True)
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


def iter_batch_outcomes(
    batch_handler: Callable[[list[TaskContext]], BatchResults], ctxs: list[TaskContext]
) -> Iterator[tuple[int, Outcome]]:
    """``(index, outcome)`` for every context, each as soon as the handler has it.

    A batch handler returns one result per context, in order, or yields ``(index, result)``
    pairs as they become ready (so a task finishes without waiting for its batch mates). A
    result that is an exception fails only its task; a handler that raises fails every task
    it has not answered yet, and one that leaves a context out fails that context. Never
    raises.
    """
    if not ctxs:
        return
    answered: set[int] = set()
    try:
        results = batch_handler(ctxs)
        if isinstance(results, list):
            if len(results) != len(ctxs):
                raise _BadBatch("batch handler returned the wrong number of results")
            pairs: Iterable[tuple[int, Any]] = enumerate(results)
        else:
            pairs = results
        for i, result in pairs:
            if not 0 <= i < len(ctxs) or i in answered:
                raise _BadBatch(f"batch handler answered context {i} twice or out of range")
            answered.add(i)
            call = _Raise(result) if isinstance(result, BaseException) else _Value(result)
            yield i, run_handler(call, ctxs[i])
        if len(answered) != len(ctxs):
            raise _BadBatch("batch handler gave no result for some contexts")
    except _BadBatch as exc:
        bad = Outcome(OutcomeStatus.FAILED, error={"code": "bad_result", "message": str(exc)})
        for i in range(len(ctxs)):
            if i not in answered:
                yield i, bad
    except Exception as exc:  # the batch itself failed: every unanswered member fails alike
        failed = run_handler(_Raise(exc), ctxs[0])
        for i in range(len(ctxs)):
            if i not in answered:
                yield i, failed


class _BadBatch(Exception):
    pass


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
