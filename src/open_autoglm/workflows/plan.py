"""A step's spec compiled once per run: parsed expressions and its effective settings.

Events never re-parse a spec; the engine reads everything it needs about a step from its
:class:`StepPlan`. Effective values follow "step, then task, then workflow": priority and
timeout may be given on the step or inside its task dict, retries on the step or as the
workflow's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from open_autoglm.spec.expressions import Expr
from open_autoglm.spec.templates import compile_value
from open_autoglm.spec.workflow import (
    RetryPolicy,
    StepSpec,
    TriggerRule,
    WorkflowSpec,
    parse_condition,
    parse_map,
)

__all__ = ["StepPlan"]


@dataclass(frozen=True)
class StepPlan:
    spec: StepSpec
    task: Any  # the task dict with its ${...} strings compiled (templates.compile_value)
    inputs: Any  # a nested workflow's inputs, compiled the same way
    when: Expr | None
    map: Expr | None
    rule: TriggerRule
    retries: RetryPolicy
    priority: int
    timeout_s: float | None

    @classmethod
    def compile(cls, step: StepSpec, workflow: WorkflowSpec) -> StepPlan:
        task = step.task or {}
        timeout = step.timeout_s if step.timeout_s is not None else task.get("timeout_s")
        priority = step.priority if step.priority is not None else task.get("priority")
        return cls(
            spec=step,
            task=compile_value(task),
            inputs=compile_value(step.inputs),
            when=None if step.when is None else parse_condition(step.when),
            map=None if step.map is None else parse_map(step.map),
            rule=TriggerRule(step.trigger_rule),
            retries=step.retries if step.retries is not None else workflow.retries,
            priority=priority if isinstance(priority, int) else workflow.priority,
            timeout_s=float(timeout) if isinstance(timeout, int | float) else None,
        )
