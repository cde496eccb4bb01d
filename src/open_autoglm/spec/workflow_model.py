"""The workflow spec's data model: steps, inputs, retry policy, and parsing from YAML/JSON.

A step runs either a ``task`` (a plain dict the core's TaskSpec validation checks) or a
nested ``workflow``. Steps declare ``depends_on``; may fan out with ``map`` (one instance per
item, ``${item}``/``${index}`` in scope, results gathered in order); may be guarded by
``when``; join upstream results by a ``trigger_rule``. Strings in ``task``, ``inputs``,
``map`` and the workflow ``outputs`` may hold ``${...}`` references (see
:mod:`open_autoglm.spec.templates`). The semantic checks over this model are in
:mod:`open_autoglm.spec.workflow`.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from open_autoglm.errors import ValidationError
from open_autoglm.spec.expressions import (
    Expr,
    ExpressionError,
    ListExpr,
    Literal,
    parse_expression,
)
from open_autoglm.spec.limits import DEFAULT_LIMITS, InputLimits, load_yaml, read_document
from open_autoglm.spec.templates import Template, compile_value

__all__ = [
    "MAX_NESTING",
    "MAX_STEPS",
    "NAME_PATTERN",
    "SCOPE_NAMES",
    "InputSpec",
    "InputType",
    "RetryPolicy",
    "StepSpec",
    "TriggerRule",
    "WorkflowSpec",
    "load_workflow",
    "parse_condition",
    "parse_map",
    "parse_workflow_text",
    "value_matches",
]

MAX_STEPS: Final = 5_000
MAX_NESTING: Final = 4
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SCOPE_NAMES: Final = ("inputs", "steps", "item", "index")


class TriggerRule(enum.StrEnum):
    """When a step with upstream steps may run, once all of them are finished."""

    ALL_SUCCESS = "all_success"  # every upstream succeeded (a failure or skip skips this one)
    ANY_SUCCESS = "any_success"  # at least one upstream succeeded
    ALL_DONE = "all_done"  # upstream finished in any state


class InputType(enum.StrEnum):
    ANY = "any"
    STRING = "string"
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    LIST = "list"
    OBJECT = "object"


def value_matches(kind: InputType, value: Any) -> bool:
    if kind is InputType.ANY:
        return True
    if kind is InputType.BOOLEAN:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    checks: dict[InputType, type | tuple[type, ...]] = {
        InputType.STRING: str,
        InputType.NUMBER: (int, float),
        InputType.INTEGER: int,
        InputType.LIST: list,
        InputType.OBJECT: dict,
    }
    return isinstance(value, checks[kind])


class RetryPolicy(BaseModel):
    """Retries of one step: ``max_retries`` more attempts, waiting with exponential backoff."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_retries: int = Field(default=0, ge=0, le=100)
    backoff_s: float = Field(default=1.0, ge=0, le=24 * 3600)
    backoff_factor: float = Field(default=2.0, ge=1, le=10)
    max_backoff_s: float = Field(default=300.0, ge=0, le=24 * 3600)

    def delay(self, failures: int) -> float:
        """Seconds to wait before the retry that follows the ``failures``-th failure."""
        return float(
            min(self.max_backoff_s, self.backoff_s * self.backoff_factor ** (failures - 1))
        )


class InputSpec(BaseModel):
    """A declared workflow input; it is required unless it has a ``default``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: InputType = InputType.ANY
    default: Any = None
    description: str = ""

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set


class StepSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    task: dict[str, Any] | None = None
    workflow: WorkflowSpec | None = None
    # Inputs of a nested workflow (values may hold references).
    inputs: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    map: Any = None
    when: str | bool | None = None
    trigger_rule: str = TriggerRule.ALL_SUCCESS.value
    retries: RetryPolicy | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    priority: int | None = Field(default=None, ge=0, le=9)
    callback_url: str | None = None

    @field_validator("depends_on", mode="before")
    @classmethod
    def _one_dependency(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("retries", mode="before")
    @classmethod
    def _retry_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"max_retries": value}
        return value


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1)
    # Named results of the run; default: the outputs of the leaf steps that succeeded.
    outputs: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0, le=30 * 24 * 3600)
    priority: int = Field(default=5, ge=0, le=9)
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    callback_url: str | None = None
    callback_secret: str | None = Field(default=None, repr=False)

    def step(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)


StepSpec.model_rebuild()


# --------------------------------------------------------------------------- parsing


def parse_workflow_text(text: str, limits: InputLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Parse YAML or JSON text (JSON is YAML) into a dict within ``limits``; syntax errors
    name the line."""
    data = load_yaml(text, limits, what="workflow", loc=["spec"])
    if not isinstance(data, dict):
        raise ValidationError(
            "a workflow must be a mapping",
            details=[{"loc": [], "msg": f"expected a mapping, got {type(data).__name__}"}],
        )
    return data


def load_workflow(path: str | Path) -> dict[str, Any]:
    """Read a workflow file (``.yaml``, ``.yml`` or ``.json``) into a dict."""
    data = read_document(Path(path))
    if not isinstance(data, dict):
        raise ValidationError(
            "a workflow must be a mapping",
            details=[{"loc": [], "msg": f"expected a mapping, got {type(data).__name__}"}],
        )
    return data


def _strip_reference(src: str) -> str:
    # ``when: "${inputs.flag}"`` and ``when: inputs.flag`` mean the same.
    s = src.strip()
    if s.startswith("${") and s.endswith("}") and s.count("${") == 1:
        return s[2:-1]
    return src


def parse_condition(when: str | bool) -> Expr:
    """Compile a ``when`` condition (bare expression or one ``${...}``)."""
    if isinstance(when, bool):
        return Literal(when)
    return parse_expression(_strip_reference(when))


def parse_map(value: Any) -> Expr:
    """Compile a ``map`` value: an expression string, or a literal list (items may be refs)."""
    if isinstance(value, str):
        return parse_expression(_strip_reference(value))
    if isinstance(value, list):
        compiled = compile_value(value)
        items = tuple(
            c.parts[0] if isinstance(c, Template) and c.is_single else Literal(c) for c in compiled
        )
        if any(isinstance(c, Template) and not c.is_single for c in compiled):
            raise ExpressionError("map list items must be plain values or one ${...} reference")
        return ListExpr(items)  # type: ignore[arg-type]
    raise ExpressionError(f"map must be a list or an expression, not {type(value).__name__}")
