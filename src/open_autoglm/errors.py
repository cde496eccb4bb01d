"""The Open-AutoGLM exception hierarchy.

Every error the platform raises on purpose derives from :class:`AutoGLMError`. The API maps
each class to one HTTP status in a single table (``api/errors.py``); the SDK maps the status
and ``error.code`` back to the same classes.

    AutoGLMError                      500 internal
    ├── ValidationError               422 validation_error   (bad spec, params, graph, ruleset)
    ├── NotFoundError                 404 not_found          (task, model, ruleset, artifact ...)
    ├── ConflictError                 409 conflict           (illegal state transition, name taken)
    │   └── TaskTakenOverError        409 task_taken_over    (another server took the task over)
    ├── AuthenticationError           401 unauthorized
    ├── PermissionDeniedError         403 forbidden          (the API key lacks the scope)
    ├── UnsupportedMediaTypeError     415 unsupported_media_type (a body that is not JSON)
    ├── PolicyBlockedError            403 blocked            (admission rule blocked the task)
    ├── PayloadTooLargeError          413 payload_too_large
    ├── AdmissionError                429 queue_full         (queue bounded; carries retry_after)
    │   └── BulkheadFullError         429 bulkhead_full      (a dependency's calls at their bound)
    ├── RateLimitedError              429 rate_limited       (carries retry_after)
    │   └── TooManyStreamsError       429 too_many_streams   (a client's open streams at cap)
    ├── UnavailableError              503 unavailable        (shutting down, no replica)
    │   └── CircuitOpenError          503 circuit_open       (upstream failing; retry_after)
    ├── TaskFailedError               500 task_failed        (raised by handlers / SDK wait)
    │   ├── TaskTimeoutError          504 timeout            (an online task past its deadline)
    │   └── MaxFiringsExceeded        500 max_firings_exceeded (a rule set that loops)
    ├── TaskCancelledError            409 cancelled
    ├── PluginError                   500 plugin_error
    └── StorageError                  500 storage_error
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = [
    "ERROR_CLASSES",
    "AdmissionError",
    "AuthenticationError",
    "AutoGLMError",
    "BulkheadFullError",
    "CircuitOpenError",
    "ConflictError",
    "ErrorDetail",
    "MaxFiringsExceeded",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PluginError",
    "PolicyBlockedError",
    "RateLimitedError",
    "StorageError",
    "TaskCancelledError",
    "TaskFailedError",
    "TaskTakenOverError",
    "TaskTimeoutError",
    "TooManyStreamsError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "error_class",
    "error_classes",
    "error_from_code",
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


class PermissionDeniedError(AutoGLMError):
    """The API key is valid but lacks the scope the route needs (``submit``, ``admin``)."""

    code = "forbidden"


class UnsupportedMediaTypeError(AutoGLMError):
    """The request body is not of a type the route takes (JSON routes take JSON only)."""

    code = "unsupported_media_type"


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


class TooManyStreamsError(RateLimitedError):
    """A client already holds its bound of open event streams."""

    code = "too_many_streams"


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


def error_classes(root: type[AutoGLMError] = AutoGLMError) -> Iterator[type[AutoGLMError]]:
    """``root`` and every error class below it, depth first in definition order."""
    yield root
    for sub in root.__subclasses__():
        if sub.__module__ == __name__:  # the hierarchy drawn above, not ad-hoc subclasses
            yield from error_classes(sub)


# Error code -> class, derived from the hierarchy (one source: each class's ``code``).
ERROR_CLASSES: dict[str, type[AutoGLMError]] = {cls.code: cls for cls in error_classes()}


def error_class(code: str, default: type[AutoGLMError] = AutoGLMError) -> type[AutoGLMError]:
    """The class an error ``code`` stands for (``default`` for a code no class has)."""
    return ERROR_CLASSES.get(code, default)


def error_from_code(
    code: str, message: str, default: type[AutoGLMError] = AutoGLMError
) -> AutoGLMError:
    """Rebuild an error another process reported as ``{code, message}``: its class, or the
    nearest base whose constructor takes only a message (a ``retry_after`` or ``rule`` that
    did not travel is not made up)."""
    for cls in error_class(code, default).__mro__:
        if isinstance(cls, type) and issubclass(cls, AutoGLMError):
            try:
                return cls(message)
            except TypeError:
                continue
    return default(message)
