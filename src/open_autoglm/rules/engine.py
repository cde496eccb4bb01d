"""The engine: working memory, the match-resolve-act loop, truth maintenance and tracing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from open_autoglm.errors import ConflictError, MaxFiringsExceeded, NotFoundError, ValidationError
from open_autoglm.rules.agenda import Activation, Agenda, Strategy
from open_autoglm.rules.compiler import Network
from open_autoglm.rules.facts import DuplicatePolicy, Fact, content_key, freeze
from open_autoglm.rules.model import Rule
from open_autoglm.rules.network import TerminalNode, Token

__all__ = ["ActionContext", "Engine", "Firing", "MaxFiringsExceeded"]

NamedAction = Callable[..., Any]
# terminal.activations value of a match its own no_loop rule made: never fires, still matched
_SUPPRESSED: Any = object()


@dataclass(frozen=True)
class Firing:
    """One rule firing, as recorded by the trace."""

    index: int
    rule: str
    salience: int
    group: str
    facts: tuple[int, ...]
    bindings: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "rule": self.rule,
            "salience": self.salience,
            "group": self.group,
            "facts": list(self.facts),
            "bindings": {k: _jsonable(v) for k, v in self.bindings.items()},
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, Fact):
        return {"fact": v.id, "type": v.type}
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


class ActionContext:
    """What an action sees when its rule fires: the bindings and the engine operations."""

    __slots__ = ("activation", "bindings", "engine")

    def __init__(self, engine: Engine, activation: Activation, bindings: dict[str, Any]) -> None:
        self.engine = engine
        self.activation = activation
        self.bindings = bindings

    @property
    def rule(self) -> Rule:
        rule: Rule = self.activation.rule
        return rule

    def __getitem__(self, var: str) -> Any:
        return self.bindings[var.removeprefix("?")]

    def assert_fact(
        self,
        type: str,
        fields: Mapping[str, Any] | None = None,
        *,
        logical: bool = False,
        **kw: Any,
    ) -> Fact:
        data = {**(fields or {}), **kw}
        return self.engine._assert(type, data, self.activation if logical else None)

    def retract(self, fact: Fact | int) -> bool:
        return self.engine.retract(fact)

    def modify(self, fact: Fact | int, changes: Mapping[str, Any] | None = None, **kw: Any) -> Fact:
        return self.engine.modify(fact, changes, **kw)

    def emit(self, payload: Mapping[str, Any]) -> None:
        self.engine.emitted.append({"rule": self.activation.rule.name, **payload})

    def log(self, message: str) -> None:
        self.engine.logs.append(f"[{self.activation.rule.name}] {message}")

    def halt(self) -> None:
        self.engine.halt()

    def focus(self, group: str) -> None:
        self.engine.agenda.focus(group)

    def call(self, name: str, **arguments: Any) -> Any:
        """Run a named action from the engine's registry (e.g. one contributed by a plugin)."""
        try:
            action = self.engine.actions[name]
        except KeyError:
            raise NotFoundError(f"unknown rule action {name!r}") from None
        self.engine.actions_taken.append({"rule": self.activation.rule.name, "action": name})
        return action(self, **arguments)


class Engine:
    """A forward-chaining production system over a Rete network.

    Args:
        rules: rules to compile now (more can be added later with :meth:`add_rule`).
        strategy: conflict resolution among equal-salience activations.
        duplicates: what asserting an identical live fact does.
        actions: named actions the rules may call (``ctx.call(name, **args)``).
        trace: record every firing (rule, salience, bindings) in :attr:`trace`.
        cpu_budget_s: CPU seconds (of the calling thread) that matching and firing may use
            from construction on; past it a ValidationError stops the evaluation, so a rule
            set whose joins explode on a client's facts costs a bounded amount. None: no bound.
    """

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        *,
        strategy: Strategy | str = Strategy.DEPTH,
        duplicates: DuplicatePolicy | str = DuplicatePolicy.RETURN_EXISTING,
        actions: Mapping[str, NamedAction] | None = None,
        trace: bool = True,
        cpu_budget_s: float | None = None,
    ) -> None:
        self.cpu_budget_s = cpu_budget_s
        self._cpu_deadline = None if cpu_budget_s is None else time.thread_time() + cpu_budget_s
        self._ticks = 0
        self.agenda = Agenda(Strategy(strategy))
        self.duplicates = DuplicatePolicy(duplicates)
        self.actions: dict[str, NamedAction] = dict(actions or {})
        self.tracing = trace
        self.trace: list[Firing] = []
        self.emitted: list[dict[str, Any]] = []
        self.logs: list[str] = []
        self.actions_taken: list[dict[str, Any]] = []
        self.rules: dict[str, Rule] = {}
        self._facts: dict[int, Fact] = {}
        self._by_content: dict[Any, Fact] = {}
        # logical fact -> activations justifying it (absent: unconditionally asserted)
        self._support: dict[Fact, set[Activation]] = {}
        self._pending_unsupported: list[Fact] = []
        self._next_id = 0
        self._tag = 0
        self._seq = 0
        self._firing: Activation | None = None
        self._buffer: list[tuple[TerminalNode, Token, int]] = []
        self._queued = 0  # activations with a seq up to this one are on the agenda
        self._halted = False
        self._depth = 0
        self.network = Network(self, self._facts_of_type)
        for r in rules:
            self.add_rule(r)

    # -- rules ---------------------------------------------------------------------------

    def add_rule(self, rule: Rule) -> None:
        if rule.name in self.rules:
            raise ConflictError(f"rule {rule.name!r} is already defined")
        self.rules[rule.name] = rule
        self.network.add_rule(rule)
        if self._firing is None:
            self._flush()

    def _facts_of_type(self, type_: str) -> list[Fact]:
        return [f for f in self._facts.values() if f.type == type_]

    # -- working memory ------------------------------------------------------------------

    def facts(self, type: str | None = None) -> list[Fact]:
        """Live facts, oldest first, optionally of one type."""
        return [f for f in self._facts.values() if type is None or f.type == type]

    def fact(self, fact_id: int) -> Fact:
        try:
            return self._facts[fact_id]
        except KeyError:
            raise NotFoundError(f"no live fact f-{fact_id}") from None

    def assert_fact(self, type: str, fields: Mapping[str, Any] | None = None, **kw: Any) -> Fact:
        """Assert a fact; returns it (or, under RETURN_EXISTING, the identical live one)."""
        return self._assert(type, {**(fields or {}), **kw}, None)

    def assert_facts(self, facts: Iterable[Mapping[str, Any]]) -> list[Fact]:
        """Assert ``{"type": ..., **fields}`` (or ``{"type", "fields"}``) records in order."""
        out = []
        for rec in facts:
            rec = dict(rec)
            type_ = rec.pop("type")
            fields = rec.pop("fields", None)
            out.append(self._assert(type_, {**(fields or {}), **rec}, None))
        return out

    def _spend(self, every: int = 256) -> None:
        """Stop once the CPU budget is spent; the clock is read every ``every`` steps (each
        assertion reads it: one can build many partial matches)."""
        if self._cpu_deadline is None:
            return
        self._ticks += 1
        if self._ticks % every or time.thread_time() < self._cpu_deadline:
            return
        msg = f"rule evaluation used more than {self.cpu_budget_s:g} CPU seconds"
        raise ValidationError(f"{msg}; stopped", details=[{"loc": ["facts"], "msg": msg}])

    def _assert(self, type_: str, data: dict[str, Any], support: Activation | None) -> Fact:
        self._spend(every=1)
        for k, v in data.items():
            if isinstance(v, list | dict):
                data[k] = freeze(v)
        if self.duplicates is not DuplicatePolicy.ALLOW:
            ckey = content_key(type_, data)
            existing = self._by_content.get(ckey)
            if existing is not None:
                if self.duplicates is DuplicatePolicy.ERROR:
                    raise ConflictError(f"duplicate fact {existing!r}")
                self._add_support(existing, support)
                return existing
        self._next_id += 1
        self._tag += 1
        f = Fact(type_, data, self._next_id, self._tag)
        self._facts[f.id] = f
        if self.duplicates is not DuplicatePolicy.ALLOW:
            self._by_content[ckey] = f
        if support is not None:
            self._support[f] = set()
            self._add_support(f, support)
        self._depth += 1
        try:
            self.network.assert_fact(f)
        finally:
            self._depth -= 1
        self._settle()
        return f

    def _add_support(self, f: Fact, support: Activation | None) -> None:
        justs = self._support.get(f)
        if support is None:
            # An unconditional assert of a logical fact makes it unconditional (as in CLIPS).
            self._support.pop(f, None)
            return
        if justs is None:
            return  # already unconditional: logical support adds nothing
        justs.add(support)
        if support.supported is None:
            support.supported = []
        support.supported.append(f)

    def _resolve(self, fact: Fact | int) -> Fact | None:
        if isinstance(fact, Fact):
            return fact if self._facts.get(fact.id) is fact else None
        return self._facts.get(fact)

    def retract(self, fact: Fact | int) -> bool:
        """Retract a live fact; returns False if it was not live."""
        f = self._resolve(fact)
        if f is None:
            return False
        del self._facts[f.id]
        if self.duplicates is not DuplicatePolicy.ALLOW:
            self._by_content.pop(content_key(f.type, f), None)
        self._support.pop(f, None)
        self._depth += 1
        try:
            self.network.retract_fact(f)
        finally:
            self._depth -= 1
        self._settle()
        return True

    def modify(self, fact: Fact | int, changes: Mapping[str, Any] | None = None, **kw: Any) -> Fact:
        """Change fields of a live fact, keeping its id; only its dependents are re-matched."""
        f = self._resolve(fact)
        if f is None:
            raise NotFoundError(f"cannot modify f-{getattr(fact, 'id', fact)}: not a live fact")
        changes = {k: freeze(v) for k, v in {**(changes or {}), **kw}.items()}
        dedupe = self.duplicates is not DuplicatePolicy.ALLOW
        if dedupe:
            new_key = content_key(f.type, {**f, **changes})
            other = self._by_content.get(new_key)
            if other is not None and other is not f:
                if self.duplicates is DuplicatePolicy.ERROR:
                    raise ConflictError(f"modify would duplicate {other!r}")
                self.retract(f)
                return other
            self._by_content.pop(content_key(f.type, f), None)
        self._depth += 1
        try:
            self.network.retract_fact(f)
            f.update(changes)
            self._tag += 1
            f.tag = self._tag
            if dedupe:
                self._by_content[new_key] = f
            self.network.assert_fact(f)
        finally:
            self._depth -= 1
        self._settle()
        return f

    def _settle(self) -> None:
        # Retractions caused by lost logical support run after the triggering change has fully
        # propagated, never re-entrantly inside the network.
        if self._depth:
            return
        while self._pending_unsupported:
            f = self._pending_unsupported.pop()
            justs = self._support.get(f)
            if justs is not None and not justs and self._resolve(f) is not None:
                self.retract(f)
        if self._firing is None:
            self._flush()  # outside a firing, each change reaches the agenda when it is done

    # -- TerminalSink --------------------------------------------------------------------

    def activate(self, terminal: TerminalNode, token: Token) -> None:
        firing = self._firing
        if firing is not None and firing.rule is terminal.rule and terminal.rule.no_loop:
            # no_loop: a rule's own actions never re-activate it; the match is kept (refraction)
            terminal.activations[token] = _SUPPRESSED
            return
        # Queued on the agenda only once the current change (or firing) is done: many matches
        # made by one action are undone by the next (modify count, then modify context).
        self._seq += 1
        seq = self._seq
        terminal.activations[token] = seq
        self._buffer.append((terminal, token, seq))
        self._spend()

    def activate_many(self, terminal: TerminalNode, tokens: list[Token]) -> None:
        firing = self._firing
        if firing is not None and firing.rule is terminal.rule and terminal.rule.no_loop:
            for token in tokens:
                self.activate(terminal, token)
            return
        acts = terminal.activations
        buffer = self._buffer
        seq = self._seq
        for token in tokens:
            seq += 1
            acts[token] = seq
            buffer.append((terminal, token, seq))
        self._seq = seq

    def deactivate_many(self, terminal: TerminalNode, tokens: list[Token]) -> None:
        pop = terminal.activations.pop
        queued = self._queued
        for token in tokens:
            act = pop(token, None)
            if type(act) is int:
                if act <= queued:
                    self.agenda.discard(terminal.rule.group)
            elif act is not None:
                terminal.activations[token] = act
                self.deactivate(terminal, token)  # fired or suppressed: the full path

    def _flush(self) -> None:
        """Queue the matches made since the last flush that are still there, in seq order."""
        if self._buffer:
            self.agenda.push_many([e for e in self._buffer if e[0].activations.get(e[1]) is e[2]])
            self._buffer = []
        self._queued = self._seq

    def deactivate(self, terminal: TerminalNode, token: Token) -> None:
        act = terminal.activations.pop(token, None)
        if act is None or act is _SUPPRESSED:
            return
        if type(act) is int:
            if act <= self._queued:  # on the agenda: its entry is now dead (else: buffered)
                self.agenda.discard(terminal.rule.group)
            return
        if act.supported:
            for f in act.supported:
                justs = self._support.get(f)
                if justs is not None:
                    justs.discard(act)
                    if not justs:
                        self._pending_unsupported.append(f)

    # -- running -------------------------------------------------------------------------

    def halt(self) -> None:
        """Stop :meth:`run` after the current firing."""
        self._halted = True

    def run(self, max_firings: int | None = None) -> int:
        """Fire activations until the agenda is empty or halted; return how many fired.

        Raises:
            MaxFiringsExceeded: ``max_firings`` fired and activations are still pending.
        """
        self._halted = False
        self._flush()
        fired = 0
        agenda = self.agenda
        tracing = self.tracing
        while not self._halted:
            entry = agenda.pop()
            if entry is None:
                break
            terminal, token, seq = entry
            if max_firings is not None and fired >= max_firings:
                agenda.push(terminal, token, seq)
                recent = [f.rule for f in self.trace[-5:]]
                raise MaxFiringsExceeded(
                    f"stopped after {fired} rule firings with {len(agenda)} activation(s) still "
                    f"pending (next: {terminal.rule.name!r}); the rule set probably loops",
                    details=[
                        {"loc": ["max_firings"], "msg": f"limit {max_firings} reached"},
                        {"loc": ["trace"], "msg": f"last rules fired: {recent}"},
                    ],
                )
            self._spend()
            act = Activation(terminal, token, seq)
            act.alive = False
            terminal.activations[token] = act
            act.fired = True
            bindings = terminal.bindings(act.token)
            if tracing:
                self.trace.append(
                    Firing(
                        len(self.trace) + 1,
                        act.rule.name,
                        act.salience,
                        act.group,
                        tuple(f.id for f in terminal.declared(act.token)),
                        {k: (tuple(v) if isinstance(v, list) else v) for k, v in bindings.items()},
                    )
                )
            ctx = ActionContext(self, act, bindings)
            self._firing = act
            try:
                for action in act.rule.actions:
                    action(ctx)
            finally:
                self._firing = None
                self._flush()
            fired += 1
        return fired

    def activations(self) -> list[Activation]:
        """Pending activations, in firing order within each group."""
        return self.agenda.activations()

    def matches(self) -> set[tuple[str, int, tuple[int, ...]]]:
        """Every current match ``(rule, variant, fact ids)``, fired or not (for checks)."""
        return {
            (t.rule.name, t.variant, tuple(f.id for f in t.declared(tok)))
            for t in self.network.terminals
            for tok in t.activations
        }

    def explain(self, rule: str) -> dict[str, Any]:
        """Say why ``rule`` has no match: the first condition no combination of facts passes."""
        from open_autoglm.rules.naive import explain

        try:
            r = self.rules[rule]
        except KeyError:
            raise NotFoundError(f"unknown rule {rule!r}") from None
        return explain(r, list(self._facts.values()))
