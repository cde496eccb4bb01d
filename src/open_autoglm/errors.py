"""The Open-AutoGLM exception hierarchy.

Every error the platform raises on purpose derives from :class:`AutoGLMError`. The API maps
each class to one HTTP status in a single table (``api/errors.py``); the SDK maps the status
and ``error.code`` back to the same classes.

    AutoGLMError                      500 internal
    ├── ValidationError               422 validation_error   (bad spec, params, graph, ruleset)
    │   └── OutboundRefusedError      422 outbound_refused   (a URL outside the outbound policy)
    ├── NotFoundError                 404 not_found          (task, model, ruleset, artifact ...)
    ├── ConflictError                 409 conflict           (illegal state transition, name taken)
    ├── AuthenticationError           401 unauthorized
    ├── PolicyBlockedError            403 blocked            (admission rule blocked the task)
    ├── PayloadTooLargeError          413 payload_too_large
    ├── AdmissionError                429 queue_full         (queue bounded; carries retry_after)
    │   └── BulkheadFullError         429 bulkhead_full      (a dependency's calls at their bound)
    ├── RateLimitedError              429 rate_limited       (carries retry_after)
    ├── UnavailableError              503 unavailable        (shutting down, no replica)
    │   └── CircuitOpenError          503 circuit_open       (upstream failing; retry_after)
    ├── TaskFailedError               -   task_failed        (raised by handlers / SDK wait)
    │   ├── TaskTimeoutError          -   timeout
    │   └── MaxFiringsExceeded        -   max_firings_exceeded (a rule set that loops)
    ├── TaskCancelledError            -   cancelled
    ├── PluginError                   500 plugin_error
    └── StorageError                  500 storage_error
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AdmissionError",
    "AuthenticationError",
    "AutoGLMError",
    "BulkheadFullError",
    "CircuitOpenError",
    "ConflictError",
    "ErrorDetail",
    "MaxFiringsExceeded",
    "NotFoundError",
    "OutboundRefusedError",
    "PayloadTooLargeError",
    "PluginError",
    "PolicyBlockedError",
    "RateLimitedError",
    "StorageError",
    "TaskCancelledError",
    "TaskFailedError",
    "TaskTimeoutError",
    "UnavailableError",
    "ValidationError",
]

ErrorDetail = dict[str, Any]  # {"loc": [...], "msg": "..."}


class AutoGLMError(Exception):
    """Base of every deliberate Open-AutoGLM error."""

    code = "internal"

    def __init__(self, message: str, *, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[ErrorDetail] = list(details or [])

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationError(AutoGLMError):
    """Input failed validation; ``details`` lists every problem with its location."""

    code = "validation_error"


class OutboundRefusedError(ValidationError):
    """A URL the server would call is outside the outbound policy (scheme, form or address)."""

    code = "outbound_refused"


class NotFoundError(AutoGLMError):
    code = "not_found"


class ConflictError(AutoGLMError):
    code = "conflict"


class TaskTakenOverError(ConflictError):
    """This server missed its lease and another replica took the task over: the other
    replica's record of it is the one that counts."""

    code = "task_taken_over"


class AuthenticationError(AutoGLMError):
    code = "unauthorized"


class PolicyBlockedError(AutoGLMError):
    """An admission policy rule refused the task."""

    code = "blocked"

    def __init__(
        self, message: str, *, rule: str, details: list[ErrorDetail] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.rule = rule


class PayloadTooLargeError(AutoGLMError):
    code = "payload_too_large"


class AdmissionError(AutoGLMError):
    """The queue is full; retry after ``retry_after`` seconds."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BulkheadFullError(AdmissionError):
    """A dependency (an upstream model) already has its bound of calls in flight and its line
    of waiting calls is full, or a call waited its time in line: refused at once."""

    code = "bulkhead_full"


class RateLimitedError(AutoGLMError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnavailableError(AutoGLMError):
    code = "unavailable"


class CircuitOpenError(UnavailableError):
    """An upstream's circuit is open: the call was refused without trying."""

    code = "circuit_open"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TaskFailedError(AutoGLMError):
    """A task ended in failure. ``retryable`` tells the scheduler whether to try again."""

    code = "task_failed"

    def __init__(
        self, message: str, *, retryable: bool = False, details: list[ErrorDetail] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retryable = retryable


class TaskTimeoutError(TaskFailedError):
    code = "timeout"


class MaxFiringsExceeded(TaskFailedError):
    """A rule run hit its firing limit with activations still pending (likely a rule loop)."""

    code = "max_firings_exceeded"


class TaskCancelledError(AutoGLMError):
    code = "cancelled"


class PluginError(AutoGLMError):
    code = "plugin_error"


class StorageError(AutoGLMError):
    code = "storage_error"
