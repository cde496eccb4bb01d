"""Pydantic models of what the API answers: the typed responses of the OpenAPI contract.

Routes render their answers with orjson for speed (``api/responses.py``); these models say
what those answers are, for the contract (``api/contract.py``) and for clients. Every model
allows fields beyond those listed: a server may add a field without breaking a client, and
the contract test (schemathesis) checks every listed field against real answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from open_autoglm.spec.task import TaskStatus

__all__ = [
    "ApiKey",
    "ApiKeyCreated",
    "ApiKeyList",
    "Artifact",
    "ArtifactList",
    "BatchAccepted",
    "ErrorBody",
    "ErrorDetail",
    "ErrorInfo",
    "Event",
    "Health",
    "InferResult",
    "ModelEntry",
    "ModelList",
    "OpenAICompletion",
    "OpenAIEmbeddings",
    "OpenAIErrorBody",
    "OpenAIModel",
    "OpenAIModelList",
    "PluginList",
    "Pruned",
    "Readiness",
    "Ruleset",
    "RulesetEvaluation",
    "RulesetList",
    "RulesetSummary",
    "RunCallbacks",
    "RunEvents",
    "Task",
    "TaskAccepted",
    "TaskEvents",
    "TaskList",
    "TaskTypeList",
    "WorkflowRun",
    "WorkflowRunList",
    "WorkflowRunSummary",
    "WorkflowValidation",
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- errors --------------------------------------------------------------------------------------


class ErrorDetail(_Open):
    loc: list[str | int] = Field(description="where the problem is, e.g. ['params', 'seconds']")
    msg: str


class ErrorInfo(_Open):
    code: str = Field(description="machine-readable, e.g. validation_error, rate_limited")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(_Open):
    """Every platform error: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorInfo


class OpenAIErrorInfo(_Open):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class OpenAIErrorBody(_Open):
    """An error of the OpenAI-compatible routes, in OpenAI's shape."""

    error: OpenAIErrorInfo


# -- tasks ---------------------------------------------------------------------------------------


class Task(_Open):
    id: str
    task_type: str
    model: str | None
    status: TaskStatus
    priority: int
    attempts: int
    max_retries: int
    idempotency_key: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: dict[str, Any] | None
    progress: float | None = None
    spec: dict[str, Any]
    result: Any = Field(default=None, description="once succeeded (GET /v1/tasks/{id})")


class TaskAccepted(Task):
    created: bool = Field(description="false: an earlier task with this idempotency_key")


class BatchAccepted(_Open):
    tasks: list[TaskAccepted]


class InferResult(_Open):
    id: str
    status: TaskStatus
    result: Any = None


class TaskList(_Open):
    tasks: list[Task]
    next_cursor: str | None


class Event(_Open):
    seq: int
    ts: float
    kind: str
    data: dict[str, Any]


class TaskEvents(_Open):
    task_id: str
    status: TaskStatus
    events: list[Event]


class Pruned(_Open):
    pruned: int
    older_than_s: float


# -- models, artifacts, rulesets ---------------------------------------------------------------


class ModelEntry(_Open):
    name: str


class ModelList(_Open):
    models: list[ModelEntry]
    cache: dict[str, Any]


class Artifact(_Open):
    id: str
    size: int
    media_type: str
    name: str
    task_id: str | None
    created_at: float


class ArtifactList(_Open):
    artifacts: list[Artifact]


class ApiKey(_Open):
    id: str
    owner: str
    scopes: list[str]
    name: str
    created_at: float
    revoked_at: float | None


class ApiKeyCreated(ApiKey):
    key: str


class ApiKeyList(_Open):
    keys: list[ApiKey]


class RulesetSummary(_Open):
    name: str
    version: int
    created_at: float
    updated_at: float


class Ruleset(RulesetSummary):
    source: dict[str, Any]


class RulesetList(_Open):
    rulesets: list[RulesetSummary]


class RulesetEvaluation(_Open):
    ruleset: str
    version: int
    fired: int
    firings: list[Any]
    facts: list[Any]


# -- workflows -----------------------------------------------------------------------------------


class WorkflowRunSummary(_Open):
    id: str
    name: str
    status: str
    error: Any = None
    created_at: float
    finished_at: float | None


class WorkflowRun(WorkflowRunSummary):
    steps: list[dict[str, Any]]


class WorkflowRunList(_Open):
    runs: list[WorkflowRunSummary]
    next_cursor: str | None


class WorkflowValidation(_Open):
    valid: bool
    name: str
    steps: list[str]
    inputs: dict[str, Any]


class RunCallbacks(_Open):
    run_id: str
    callbacks: list[dict[str, Any]]


class RunEvents(_Open):
    run_id: str
    status: str
    events: list[Event]


# -- OpenAI-compatible ---------------------------------------------------------------------------


class OpenAIModel(_Open):
    id: str
    object: str


class OpenAIModelList(_Open):
    object: str
    data: list[OpenAIModel]


class OpenAIEmbeddings(_Open):
    object: str
    data: list[dict[str, Any]]
    model: str


class OpenAICompletion(_Open):
    """A completion or chat completion (``object`` says which); streamed as SSE chunks."""

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]


# -- system --------------------------------------------------------------------------------------


class Health(_Open):
    status: str
    version: str


class Readiness(_Open):
    status: str
    reason: str | None = Field(default=None, description="why not ready (with a 503)")


class TaskTypeList(_Open):
    task_types: list[dict[str, Any]]


class PluginList(_Open):
    plugins: list[dict[str, Any]]
