"""WorkflowSpec validation at submit time: every problem found, reported together.

:func:`validate_workflow` parses a spec (dict or YAML/JSON text) into the model of
:mod:`open_autoglm.spec.workflow_model` and collects every problem (cycles, unknown or
non-upstream references, unknown task types, bad expressions with their position ...) into
one :class:`~open_autoglm.errors.ValidationError`; :func:`bind_inputs` checks run inputs.
This module is the public entry point for workflow specs, so it also exports the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Container, Iterator, Mapping
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from open_autoglm.errors import ErrorDetail, ValidationError
from open_autoglm.spec.expressions import Expr, ExpressionError, Literal, references
from open_autoglm.spec.templates import Template, iter_templates
from open_autoglm.spec.workflow_model import (
    MAX_NESTING,
    MAX_STEPS,
    NAME_PATTERN,
    SCOPE_NAMES,
    InputSpec,
    InputType,
    RetryPolicy,
    StepSpec,
    TriggerRule,
    WorkflowSpec,
    load_workflow,
    parse_condition,
    parse_map,
    parse_workflow_text,
    value_matches,
)

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

# validate_task(step_name, task_dict) -> problems; a problem is a message or {"loc", "msg"}.
TaskValidator = Callable[[str, dict[str, Any]], list[Any]]


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
            if not value_matches(decl.type, value):
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
        if not NAME_PATTERN.match(spec.name):
            self.add((*loc, "name"), f"workflow name {spec.name!r} must be an identifier")
        if len(spec.steps) > MAX_STEPS:
            self.add((*loc, "steps"), f"a workflow may have at most {MAX_STEPS} steps")
            return
        for name, decl in spec.inputs.items():
            if not NAME_PATTERN.match(name):
                self.add((*loc, "inputs", name), f"input name {name!r} must be an identifier")
            if (
                not decl.required
                and decl.default is not None
                and not value_matches(decl.type, decl.default)
            ):
                self.add(
                    (*loc, "inputs", name), f"default of input {name!r} is not a {decl.type.value}"
                )
        self._check_url(spec.callback_url, (*loc, "callback_url"), "workflow")

        index: dict[str, int] = {}
        for i, step in enumerate(spec.steps):
            sloc = (*loc, "steps", i)
            if not NAME_PATTERN.match(step.name):
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
                allowed = ", ".join(SCOPE_NAMES)
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
