"""The ``rule-inference`` task type: run a ruleset over input facts and report what happened."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from open_autoglm.errors import NotFoundError, ValidationError
from open_autoglm.rules.agenda import Strategy
from open_autoglm.rules.dsl import parse_ruleset
from open_autoglm.rules.engine import Engine
from open_autoglm.rules.model import Rule
from open_autoglm.rules.policy import POLICY_ACTIONS
from open_autoglm.spec.limits import DEFAULT_LIMITS, InputLimits
from open_autoglm.tasks.base import TaskContext, TaskType

__all__ = [
    "RuleInferenceParams",
    "check_max_firings",
    "rule_inference",
    "rule_task_types",
    "run_rules",
]


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


def _check_facts(facts: Any, loc: str) -> list[dict[str, Any]]:
    if not isinstance(facts, list) or not all(isinstance(f, dict) and "type" in f for f in facts):
        raise ValidationError(
            f"rule-inference {loc} must be a list of facts like {{'type': ..., field: value}}",
            details=[{"loc": [loc], "msg": "expected a list of facts with a 'type'"}],
        )
    return facts


def check_max_firings(max_firings: int, limits: InputLimits, loc: list[str | int]) -> None:
    """Refuse a ``max_firings`` above the server's ceiling (``limits.max_firings``)."""
    if max_firings > limits.max_firings:
        msg = f"at most {limits.max_firings} on this server"
        raise ValidationError(f"max_firings: {msg}", details=[{"loc": loc, "msg": msg}])


def run_rules(
    rules: Iterable[Rule],
    facts: list[dict[str, Any]],
    *,
    strategy: Strategy = Strategy.DEPTH,
    max_firings: int = 10_000,
    actions: Mapping[str, Any] | None = None,
    cpu_budget_s: float | None = None,
) -> dict[str, Any]:
    """Assert ``facts``, run to quiescence, and report firings, facts, emits and actions.

    Raises:
        MaxFiringsExceeded: the rules were still firing after ``max_firings``.
        ValidationError: matching and firing used more than ``cpu_budget_s`` CPU seconds.
    """
    engine = Engine(
        rules, strategy=strategy, actions=actions or POLICY_ACTIONS, cpu_budget_s=cpu_budget_s
    )
    engine.assert_facts(facts)
    fired = engine.run(max_firings=max_firings)
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


def rule_inference(ctx: TaskContext) -> dict[str, Any]:
    params: RuleInferenceParams = ctx.params  # type: ignore[assignment]
    try:
        catalog = ctx.service("rulesets")
        actions: Mapping[str, Any] = catalog.actions  # plugin actions too
    except KeyError:
        catalog, actions = None, POLICY_ACTIONS
    limits: InputLimits = getattr(catalog, "limits", DEFAULT_LIMITS)
    check_max_firings(params.max_firings, limits, ["params", "max_firings"])
    ruleset = params.ruleset
    if isinstance(ruleset, str):
        if catalog is None:
            raise NotFoundError(f"ruleset {ruleset!r}: no rulesets service in this executor")
        rules = catalog.compiled(ruleset).rules  # NotFoundError when there is none
    else:
        rules = parse_ruleset(ruleset, actions, limits)[1]
    if params.facts is not None:
        facts = _check_facts(params.facts, "facts")
    else:
        facts = _check_facts(ctx.input, "input")
    out = run_rules(
        rules,
        facts,
        strategy=params.strategy,
        max_firings=params.max_firings,
        actions=actions,
        cpu_budget_s=limits.eval_cpu_s,
    )
    for line in out["logs"]:
        ctx.log(line)
    return out


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
