"""WorkflowSpec: a DAG of steps, parsed from YAML/JSON and validated at submit time.

A step runs either a ``task`` (a plain dict the core's TaskSpec validation checks through the
``validate_task`` callback) or a nested ``workflow``. Steps declare ``depends_on``; may fan
out with ``map`` (one instance per item, ``${item}``/``${index}`` in scope, results gathered
in order); may be guarded by ``when``; join upstream results by a ``trigger_rule``. Strings in
``task``, ``inputs``, ``map`` and the workflow ``outputs`` may hold ``${...}`` references
(see :mod:`open_autoglm.workflows.templates`).

:func:`validate_workflow` collects every problem (cycles, unknown or non-upstream
references, unknown task types, bad expressions with their position ...) and raises them
together as one :class:`~open_autoglm.errors.ValidationError`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Collection, Container, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from open_autoglm.errors import ErrorDetail, ValidationError
from open_autoglm.workflows.expressions import (
    Expr,
    ExpressionError,
    ListExpr,
    Literal,
    parse_expression,
    references,
)
from open_autoglm.workflows.templates import Template, compile_value, iter_templates

__all__ = [
    "MAX_NESTING",
    "MAX_STEPS",
    "InputSpec",
    "InputType",
    "RetryPolicy",
    "StepSpec",
    "TaskValidator",
    "TriggerRule",
    "WorkflowSpec",
    "bind_inputs",
    "load_workflow",
    "parse_condition",
    "parse_map",
    "parse_workflow_text",
    "validate_workflow",
]

MAX_STEPS: Final = 5_000
MAX_NESTING: Final = 4
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SCOPE_NAMES: Final = ("inputs", "steps", "item", "index")

# validate_task(step_name, task_dict) -> problems; a problem is a message or {"loc", "msg"}.
TaskValidator = Callable[[str, dict[str, Any]], list[Any]]


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


def _matches(kind: InputType, value: Any) -> bool:
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


def parse_workflow_text(text: str) -> dict[str, Any]:
    """Parse YAML or JSON text (JSON is YAML) into a dict; syntax errors name the line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValidationError(
            f"workflow is not valid YAML/JSON{where}",
            details=[{"loc": [], "msg": f"syntax error{where}: {getattr(exc, 'problem', exc)}"}],
        ) from None
    if not isinstance(data, dict):
        raise ValidationError(
            "a workflow must be a mapping",
            details=[{"loc": [], "msg": f"expected a mapping, got {type(data).__name__}"}],
        )
    return data


def load_workflow(path: str | Path) -> dict[str, Any]:
    """Read a workflow file (``.yaml``, ``.yml`` or ``.json``) into a dict."""
    return parse_workflow_text(Path(path).read_text(encoding="utf-8"))


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


def _pydantic_details(exc: PydanticValidationError) -> list[ErrorDetail]:
    return [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]


# --------------------------------------------------------------------------- validation


def validate_workflow(
    spec: WorkflowSpec | Mapping[str, Any] | str,
    known_task_types: Collection[str] | None = None,
    validate_task: TaskValidator | None = None,
) -> WorkflowSpec:
    """Parse and check a workflow; raise one ValidationError listing every problem.

    Args:
        spec: a parsed spec, a dict, or YAML/JSON text.
        known_task_types: the registered task types; ``None`` skips that check.
        validate_task: the core's TaskSpec check, called with each step's task dict (its
            ``${...}`` references still unresolved).
    """
    if isinstance(spec, str):
        spec = parse_workflow_text(spec)
    if not isinstance(spec, WorkflowSpec):
        try:
            spec = WorkflowSpec.model_validate(dict(spec))
        except PydanticValidationError as exc:
            details = _pydantic_details(exc)
            raise ValidationError(
                f"workflow is malformed: {len(details)} problem(s)", details=details
            ) from None
    problems: list[ErrorDetail] = []
    _Checker(problems, known_task_types, validate_task).check(spec, (), 1)
    if problems:
        first = problems[0]["msg"]
        raise ValidationError(
            f"workflow {spec.name!r} is invalid: {len(problems)} problem(s); first: {first}",
            details=problems,
        )
    return spec


def bind_inputs(spec: WorkflowSpec, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge run inputs with defaults; raise listing missing, unknown and mistyped inputs."""
    given = dict(given or {})
    problems: list[ErrorDetail] = []
    bound: dict[str, Any] = {}
    for name in sorted(set(given) - set(spec.inputs)):
        problems.append({"loc": ["inputs", name], "msg": f"unknown input {name!r}"})
    for name, decl in spec.inputs.items():
        if name in given:
            value = given[name]
            if not _matches(decl.type, value):
                problems.append(
                    {"loc": ["inputs", name], "msg": f"input {name!r} must be a {decl.type.value}"}
                )
            bound[name] = value
        elif decl.required:
            problems.append({"loc": ["inputs", name], "msg": f"missing required input {name!r}"})
        else:
            bound[name] = decl.default
    if problems:
        raise ValidationError(f"bad inputs for workflow {spec.name!r}", details=problems)
    return bound


Loc = tuple[str | int, ...]


class _Checker:
    """Semantic checks over a structurally valid spec, appending to ``problems``."""

    def __init__(
        self,
        problems: list[ErrorDetail],
        known: Collection[str] | None,
        validate_task: TaskValidator | None,
    ) -> None:
        self.problems = problems
        self.known = known
        self.validate_task = validate_task
        self._step_names: dict[int, frozenset[str]] = {}

    def _names(self, spec: WorkflowSpec) -> frozenset[str]:
        key = id(spec)
        if key not in self._step_names:
            self._step_names[key] = frozenset(s.name for s in spec.steps)
        return self._step_names[key]

    def add(self, loc: Loc, msg: str) -> None:
        self.problems.append({"loc": list(loc), "msg": msg})

    def check(self, spec: WorkflowSpec, loc: Loc, depth: int) -> None:
        if not _NAME.match(spec.name):
            self.add((*loc, "name"), f"workflow name {spec.name!r} must be an identifier")
        if len(spec.steps) > MAX_STEPS:
            self.add((*loc, "steps"), f"a workflow may have at most {MAX_STEPS} steps")
            return
        for name, decl in spec.inputs.items():
            if not _NAME.match(name):
                self.add((*loc, "inputs", name), f"input name {name!r} must be an identifier")
            if (
                not decl.required
                and decl.default is not None
                and not _matches(decl.type, decl.default)
            ):
                self.add(
                    (*loc, "inputs", name), f"default of input {name!r} is not a {decl.type.value}"
                )
        self._check_url(spec.callback_url, (*loc, "callback_url"), "workflow")

        index: dict[str, int] = {}
        for i, step in enumerate(spec.steps):
            sloc = (*loc, "steps", i)
            if not _NAME.match(step.name):
                self.add((*sloc, "name"), f"step name {step.name!r} must be an identifier")
            if step.name in index:
                self.add(
                    (*sloc, "name"),
                    f"duplicate step name {step.name!r} (also steps[{index[step.name]}])",
                )
            else:
                index[step.name] = i
        deps = {s.name: [d for d in s.depends_on if d in index] for s in spec.steps}
        for i, step in enumerate(spec.steps):
            sloc = (*loc, "steps", i)
            for d in step.depends_on:
                if d not in index:
                    self.add(
                        (*sloc, "depends_on"), f"step {step.name!r} depends on unknown step {d!r}"
                    )
            if len(set(step.depends_on)) != len(step.depends_on):
                self.add((*sloc, "depends_on"), f"step {step.name!r} lists a dependency twice")
        for cycle in _cycles(deps):
            self.add((*loc, "steps"), "dependency cycle: " + " -> ".join(cycle))
        upstream = _ancestors(deps)
        for i, step in enumerate(spec.steps):
            self._check_step(spec, step, (*loc, "steps", i), upstream[step.name], depth)
        for oloc, src, t in iter_templates(spec.outputs, (*loc, "outputs")):
            self._check_template(
                oloc, src, t, "workflow outputs", spec, frozenset(index), mapped=False
            )

    def _check_url(self, url: str | None, loc: Loc, owner: str) -> None:
        if url is not None and not re.match(r"^https?://[^\s/]+", url):
            self.add(loc, f"{owner} callback_url {url!r} must be an http(s) URL")

    def _check_step(
        self, spec: WorkflowSpec, step: StepSpec, loc: Loc, upstream: Container[str], depth: int
    ) -> None:
        who = f"step {step.name!r}"
        if (step.task is None) == (step.workflow is None):
            self.add(loc, f"{who} needs exactly one of 'task' or 'workflow'")
        if step.task is not None:
            self._check_task(step, loc)
            if step.inputs:
                self.add(
                    (*loc, "inputs"), f"{who}: 'inputs' is for nested workflows; use task.input"
                )
        if step.workflow is not None:
            if depth >= MAX_NESTING:
                self.add((*loc, "workflow"), f"{who}: workflows nest at most {MAX_NESTING} deep")
            else:
                self.check(step.workflow, (*loc, "workflow"), depth + 1)
            for name, decl in step.workflow.inputs.items():
                if decl.required and name not in step.inputs:
                    self.add((*loc, "inputs"), f"{who}: nested workflow needs input {name!r}")
            for name in step.inputs:
                if name not in step.workflow.inputs:
                    self.add(
                        (*loc, "inputs", name), f"{who}: nested workflow has no input {name!r}"
                    )
        try:
            TriggerRule(step.trigger_rule)
        except ValueError:
            allowed = ", ".join(r.value for r in TriggerRule)
            self.add(
                (*loc, "trigger_rule"),
                f"{who}: unknown trigger rule {step.trigger_rule!r} (expected one of {allowed})",
            )
        self._check_url(step.callback_url, (*loc, "callback_url"), who)
        mapped = step.map is not None
        if mapped:
            self._check_map(spec, step, loc, upstream)
        if step.when is not None:
            try:
                expr = parse_condition(step.when)
            except ExpressionError as exc:
                self.add((*loc, "when"), f"{who}: bad condition {step.when!r}: {exc.message}")
            else:
                self._check_refs((*loc, "when"), expr, who, spec, upstream, mapped=False)
        fields: dict[str, Any] = {"task": step.task or {}, "inputs": step.inputs}
        for tloc, src, t in iter_templates(fields, loc):
            self._check_template(tloc, src, t, who, spec, upstream, mapped)

    def _check_task(self, step: StepSpec, loc: Loc) -> None:
        assert step.task is not None  # checked by the caller; narrows the type for mypy
        task_type = step.task.get("task_type")
        who = f"step {step.name!r}"
        if not isinstance(task_type, str) or not task_type:
            self.add((*loc, "task", "task_type"), f"{who}: task needs a 'task_type' string")
        elif self.known is not None and task_type not in self.known:
            known = ", ".join(sorted(self.known)) or "none"
            self.add(
                (*loc, "task", "task_type"),
                f"{who}: unknown task type {task_type!r} (known: {known})",
            )
        elif self.validate_task is not None:
            for problem in self.validate_task(step.name, dict(step.task)):
                if isinstance(problem, Mapping):
                    sub = [*loc, "task", *problem.get("loc", [])]
                    self.add(tuple(sub), f"{who}: {problem.get('msg', problem)}")
                else:
                    self.add((*loc, "task"), f"{who}: {problem}")

    def _check_map(
        self, spec: WorkflowSpec, step: StepSpec, loc: Loc, upstream: Container[str]
    ) -> None:
        who = f"step {step.name!r}"
        try:
            expr = parse_map(step.map)
        except ExpressionError as exc:
            self.add((*loc, "map"), f"{who}: bad map {step.map!r}: {exc.message}")
            return
        if isinstance(expr, Literal):
            kind = "null" if expr.value is None else type(expr.value).__name__
            self.add((*loc, "map"), f"{who}: map must give a list, but is a {kind} literal")
            return
        self._check_refs((*loc, "map"), expr, who, spec, upstream, mapped=False)

    def _check_template(
        self,
        loc: Loc,
        src: str,
        t: Template | ExpressionError,
        who: str,
        spec: WorkflowSpec,
        upstream: Container[str],
        mapped: bool,
    ) -> None:
        if isinstance(t, ExpressionError):
            self.add(loc, f"{who}: bad reference in {src!r}: {t.message}")
            return
        for expr in t.expressions():
            self._check_refs(loc, expr, who, spec, upstream, mapped)

    def _check_refs(
        self,
        loc: Loc,
        expr: Expr,
        who: str,
        spec: WorkflowSpec,
        upstream: Container[str],
        mapped: bool,
    ) -> None:
        step_names = self._names(spec)
        for path in references(expr):
            root = path[0]
            if root == "inputs":
                if len(path) > 1 and path[1] not in spec.inputs:
                    self.add(loc, f"{who} references unknown input {path[1]!r}")
            elif root == "steps":
                if len(path) < 2:
                    continue
                target = path[1]
                if target not in step_names:
                    self.add(loc, f"{who} references unknown step {target!r}")
                elif target not in upstream:
                    self.add(
                        loc,
                        f"{who} references steps.{target} but {target!r} is not upstream of it "
                        "(add it to depends_on)",
                    )
                elif len(path) > 2 and path[2] not in ("output", "status", "error"):
                    self.add(
                        loc,
                        f"{who}: steps.{target}.{path[2]} is not a step field "
                        "(use output, status or error)",
                    )
            elif root in ("item", "index"):
                if not mapped:
                    self.add(loc, f"{who} uses {root!r} but only a mapped step's task has one")
            else:
                allowed = ", ".join(_SCOPE_NAMES)
                self.add(loc, f"{who} references unknown name {root!r} (expected {allowed})")


def _cycles(deps: Mapping[str, list[str]]) -> Iterator[list[str]]:
    """Yield each dependency cycle once, as ``[a, b, c, a]`` in dependency order."""
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    seen: set[frozenset[str]] = set()
    for root in deps:
        if state.get(root):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(deps[root]))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                # The cycle is the stack suffix from ``child``; edges point at dependencies,
                # so reverse it to read in run order (a -> b means b depends on a).
                cycle = path[path.index(child) :]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    ordered = list(reversed(cycle))
                    yield [*ordered, ordered[0]]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(deps[child])))
                path.append(child)


class _Upstream(Container[str]):
    """Membership in a step's transitive upstream, as a bitmask over step indexes.

    Bitmasks keep the check linear-ish for long chains, where explicit ancestor sets would
    be quadratic (a 1,000-step chain holds ~500k ancestor entries).
    """

    __slots__ = ("bits", "mask")

    def __init__(self, mask: int, bits: Mapping[str, int]) -> None:
        self.mask = mask
        self.bits = bits

    def __contains__(self, name: object) -> bool:
        bit = self.bits.get(name) if isinstance(name, str) else None
        return bit is not None and bool(self.mask & bit)


def _ancestors(deps: Mapping[str, list[str]]) -> dict[str, _Upstream]:
    """Transitive upstream of each step; safe on cyclic input (cycles are reported elsewhere)."""
    bits = {name: 1 << i for i, name in enumerate(deps)}
    masks: dict[str, int] = {}
    for root in deps:
        # Iterative post-order DFS; a node met again while on the stack is part of a cycle
        # and contributes what is known so far.
        stack: list[tuple[str, bool]] = [(root, False)]
        on_stack: set[str] = set()
        while stack:
            node, expanded = stack.pop()
            if node in masks:
                continue
            if expanded:
                on_stack.discard(node)
                m = 0
                for d in deps[node]:
                    m |= masks.get(d, 0) | bits[d]
                masks[node] = m
                continue
            on_stack.add(node)
            stack.append((node, True))
            stack.extend((d, False) for d in deps[node] if d not in masks and d not in on_stack)
    return {name: _Upstream(masks[name], bits) for name in deps}
