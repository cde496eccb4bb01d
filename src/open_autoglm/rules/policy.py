"""Admission policies: run a ruleset over a task spec and say block / prioritise / reroute / tag.

Pure: facts in, a :class:`PolicyDecision` out. The platform builds the facts (the task spec, the
client identity, recent rates, any extra facts such as ``user_login``) and acts on the decision.
The policy actions ``block``, ``set_priority``, ``reroute`` and ``tag`` are built in; other named
actions (from plugins) may be passed in as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from open_autoglm.rules.dsl import load_ruleset
from open_autoglm.rules.engine import ActionContext, Engine
from open_autoglm.rules.model import Rule

__all__ = ["POLICY_ACTIONS", "AdmissionPolicy", "PolicyDecision"]


@dataclass
class PolicyDecision:
    """What the admission rules decided; ``fired`` lists the rules that fired, in order."""

    blocked: bool = False
    block_rule: str | None = None
    reason: str = ""
    priority: int | None = None
    model: str | None = None
    tags: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _decision(ctx: ActionContext) -> PolicyDecision:
    decision = getattr(ctx.engine, "policy_decision", None)
    if decision is None:
        decision = PolicyDecision()
        ctx.engine.policy_decision = decision  # type: ignore[attr-defined]
    return decision


def _block(ctx: ActionContext, reason: str = "") -> None:
    d = _decision(ctx)
    if not d.blocked:  # the first (highest-priority) block names the rule
        d.blocked, d.block_rule, d.reason = True, ctx.rule.name, reason
    ctx.halt()


def _set_priority(ctx: ActionContext, priority: int) -> None:
    _decision(ctx).priority = int(priority)


def _reroute(ctx: ActionContext, model: str) -> None:
    _decision(ctx).model = str(model)


def _tag(ctx: ActionContext, tag: str) -> None:
    d = _decision(ctx)
    if tag not in d.tags:
        d.tags.append(str(tag))


POLICY_ACTIONS: dict[str, Callable[..., Any]] = {
    "block": _block,
    "set_priority": _set_priority,
    "reroute": _reroute,
    "tag": _tag,
}


class AdmissionPolicy:
    """A compiled admission ruleset; :meth:`evaluate` is pure and re-entrant.

    Facts given to the rules: ``task`` (the spec's fields), ``client`` (identity fields),
    ``rate`` (one per ``{name: value}`` of recent rates: ``{name, value}``), plus ``extra``.
    """

    def __init__(
        self,
        ruleset: Mapping[str, Any] | str | Path,
        *,
        actions: Mapping[str, Any] | None = None,
        max_firings: int = 1000,
        cpu_budget_s: float | None = None,
    ) -> None:
        self.actions = {**POLICY_ACTIONS, **(actions or {})}
        self.model, self.rules = load_ruleset(ruleset, self.actions)
        self.max_firings = max_firings
        self.cpu_budget_s = cpu_budget_s

    @classmethod
    def from_rules(cls, rules: Iterable[Rule], **kw: Any) -> AdmissionPolicy:
        self = cls.__new__(cls)
        self.actions = {**POLICY_ACTIONS, **kw.pop("actions", {})}
        self.model = None  # type: ignore[assignment]
        self.rules = list(rules)
        self.max_firings = kw.pop("max_firings", 1000)
        self.cpu_budget_s = kw.pop("cpu_budget_s", None)
        return self

    def evaluate(
        self,
        task: Mapping[str, Any] | None = None,
        client: Mapping[str, Any] | None = None,
        rates: Mapping[str, float] | None = None,
        extra: Iterable[Mapping[str, Any]] = (),
    ) -> PolicyDecision:
        engine = Engine(self.rules, actions=self.actions, cpu_budget_s=self.cpu_budget_s)
        engine.policy_decision = PolicyDecision()  # type: ignore[attr-defined]
        if task is not None:
            engine.assert_fact("task", dict(task))
        if client is not None:
            engine.assert_fact("client", dict(client))
        for name, value in (rates or {}).items():
            engine.assert_fact("rate", {"name": name, "value": value})
        engine.assert_facts(extra)
        engine.run(max_firings=self.max_firings)
        decision: PolicyDecision = engine.policy_decision  # type: ignore[attr-defined]
        decision.fired = [f.rule for f in engine.trace]
        return decision
