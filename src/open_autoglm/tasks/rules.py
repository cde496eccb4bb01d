"""The ``rule-inference`` task type: run a ruleset over input facts and report what happened."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from open_autoglm.errors import NotFoundError, TaskFailedError, ValidationError
from open_autoglm.rules.agenda import Strategy
from open_autoglm.rules.dsl import parse_ruleset
from open_autoglm.rules.engine import Engine
from open_autoglm.rules.policy import POLICY_ACTIONS
from open_autoglm.tasks.base import TaskContext, TaskType

__all__ = ["RuleInferenceParams", "rule_inference", "rule_task_types"]


class RuleInferenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ruleset: dict[str, Any] | str = Field(description="inline ruleset, or the name of a stored one")
    facts: list[dict[str, Any]] | None = Field(default=None, description="facts (else the input)")
    strategy: Strategy = Strategy.DEPTH
    max_firings: int = Field(default=10_000, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _inline_ruleset_is_valid(self) -> RuleInferenceParams:
        if isinstance(self.ruleset, dict):
            parse_ruleset(self.ruleset, POLICY_ACTIONS)  # reject bad rulesets at submit time
        return self


def rule_inference(ctx: TaskContext) -> dict[str, Any]:
    params: RuleInferenceParams = ctx.params  # type: ignore[assignment]
    ruleset = params.ruleset
    if isinstance(ruleset, str):
        try:
            ruleset = ctx.service("rulesets").get(ruleset)
        except KeyError as exc:
            raise NotFoundError(f"ruleset {params.ruleset!r} not found") from exc
    _, rules = parse_ruleset(ruleset, POLICY_ACTIONS)
    facts = params.facts if params.facts is not None else ctx.input
    if not isinstance(facts, list) or not all(isinstance(f, dict) and "type" in f for f in facts):
        raise ValidationError(
            "rule-inference input must be a list of facts like {'type': ..., field: value}",
            details=[{"loc": ["input"], "msg": "expected a list of facts with a 'type'"}],
        )
    engine = Engine(rules, strategy=params.strategy, actions=POLICY_ACTIONS)
    engine.assert_facts(facts)
    try:
        fired = engine.run(max_firings=params.max_firings)
    except TaskFailedError:
        raise
    for line in engine.logs:
        ctx.log(line)
    decision = getattr(engine, "policy_decision", None)
    return {
        "fired": fired,
        "firings": [f.to_dict() for f in engine.trace],
        "facts": [f.to_dict() for f in engine.facts()],
        "emitted": engine.emitted,
        "actions": engine.actions_taken,
        "logs": engine.logs,
        "decision": decision.to_dict() if decision is not None else None,
    }


def rule_task_types() -> list[TaskType]:
    """The task types this module contributes."""
    return [
        TaskType(
            name="rule-inference",
            handler=rule_inference,
            params_model=RuleInferenceParams,
            description="Run a Rete ruleset over facts; returns firings, facts, emitted events.",
        )
    ]
