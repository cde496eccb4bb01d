"""YAML/JSON rulesets: the file format (pydantic), validation with located errors, compilation.

    name: admission
    schemas: {user_login: {user: str, risk_score: float}}      # optional; enables field checks
    rules:
      - name: block_access
        salience: 10
        when:
          - user_login: {user: "?u", risk_score: {">": 0.8}}
          - not: {session: {user: "?u", trusted: true}}
          - test: "?u != 'admin'"
        then:
          - block: {reason: "risk too high for {?u}"}            # a named action
          - assert: {alert: {user: "?u"}}
          - emit: {event: blocked, user: "?u"}

Patterns: ``{type: {field: value}}`` or ``{fact: type, bind: "?f", where: {...}}``; a value is a
literal (equality), a variable ``"?x"`` (binds on first use, joins after) or ``{op: value}`` with
op in ``== != < <= > >= in not_in``. Conditions also: ``not``, ``exists``, ``or`` (list of
alternatives, each a condition or a list), ``test`` (an expression). Actions: ``assert`` (with
``logical: true`` for truth maintenance), ``retract: ?f``, ``modify: ?f`` + ``set``, ``log``,
``emit``, ``halt``, ``focus``, and named actions from the registry given to the loader.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from open_autoglm.errors import ValidationError
from open_autoglm.rules.expressions import compile_expression
from open_autoglm.rules.model import (
    Condition,
    Constraint,
    Exists,
    Not,
    Op,
    Or,
    Pattern,
    Rule,
    Test,
    Var,
    expand_or,
)
from open_autoglm.spec.limits import DEFAULT_LIMITS, InputLimits, check_tree, read_document

__all__ = [
    "BUILTIN_ACTIONS",
    "RuleModel",
    "RulesetModel",
    "load_ruleset",
    "parse_ruleset",
]

BUILTIN_ACTIONS = frozenset({"assert", "retract", "modify", "log", "emit", "halt", "focus", "call"})
_OPS = {op.value: op for op in Op}
_TEMPLATE = re.compile(r"\{\?([A-Za-z_][A-Za-z0-9_]*)\}")
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "number": (int, float),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
    "any": (object,),
}


class RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    salience: int = 0
    group: str = "MAIN"
    no_loop: bool = False
    when: list[Any] = Field(min_length=1)
    then: list[Any] = Field(default_factory=list)


class RulesetModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    description: str = ""
    schemas: dict[str, dict[str, str]] = Field(default_factory=dict)
    rules: list[RuleModel] = Field(min_length=1)


Loc = list[str | int]


class _Compiler:
    def __init__(
        self, model: RulesetModel, actions: Mapping[str, Any], limits: InputLimits = DEFAULT_LIMITS
    ) -> None:
        self.model = model
        self.actions = actions
        self.limits = limits
        self.errors: list[dict[str, Any]] = []
        for t, fields in model.schemas.items():
            for f, ty in fields.items():
                if ty not in _TYPES:
                    self.error(
                        ["schemas", t, f], f"unknown field type {ty!r} (use {sorted(_TYPES)})"
                    )

    def error(self, loc: Loc, msg: str) -> None:
        self.errors.append({"loc": loc, "msg": msg})

    # -- conditions ------------------------------------------------------------------------

    def conditions(self, items: list[Any], loc: Loc) -> list[Condition]:
        out: list[Condition] = []
        for i, item in enumerate(items):
            c = self.condition(item, [*loc, i])
            if c is not None:
                out.append(c)
        return out

    def condition(self, item: Any, loc: Loc) -> Condition | None:
        if not isinstance(item, dict) or not item:
            self.error(loc, "a condition is a mapping (pattern, not, exists, or, test)")
            return None
        if len(item) == 1:
            ((key, body),) = item.items()
            if key in ("not", "exists"):
                p = self.pattern(body, [*loc, key])
                if p is None:
                    return None
                return Not(p) if key == "not" else Exists(p)
            if key == "test":
                if not isinstance(body, str):
                    self.error([*loc, "test"], "test takes an expression string")
                    return None
                try:
                    fn, variables = compile_expression(body, self.limits)
                except ValidationError as exc:
                    self.error([*loc, "test"], exc.message)
                    return None
                return Test(fn, variables, body)
            if key == "or":
                if not isinstance(body, list) or len(body) < 2:
                    self.error([*loc, "or"], "or takes a list of at least two alternatives")
                    return None
                alts = []
                for j, alt in enumerate(body):
                    seq = alt if isinstance(alt, list) else [alt]
                    if isinstance(alt, dict) and set(alt) == {"and"}:
                        seq = alt["and"]
                    alts.append(tuple(self.conditions(seq, [*loc, "or", j])))
                return Or(tuple(alts))
        return self.pattern(item, loc)

    def pattern(self, item: Any, loc: Loc) -> Pattern | None:
        if not isinstance(item, dict):
            self.error(loc, "a pattern is a mapping {type: {field: value}}")
            return None
        item = dict(item)
        bind = item.pop("bind", None)
        if "fact" in item:
            type_, where = item.pop("fact"), item.pop("where", {}) or {}
            if item:
                self.error(loc, f"unexpected keys {sorted(item)} in pattern")
        elif len(item) == 1:
            ((type_, where),) = item.items()
            where = where or {}
        else:
            self.error(loc, "a pattern names exactly one fact type")
            return None
        if not isinstance(type_, str) or not isinstance(where, dict):
            self.error(loc, "pattern must map a fact type to a mapping of fields")
            return None
        if bind is not None and not (isinstance(bind, str) and _is_var(bind)):
            self.error([*loc, "bind"], "bind must be a variable like ?f")
            bind = None
        schema = self.model.schemas.get(type_)
        constraints = []
        for fld, spec in where.items():
            floc = [*loc, type_, fld]
            if schema is not None and fld not in schema:
                self.error(
                    floc,
                    f"unknown field {fld!r} for fact type {type_!r} (schema: {sorted(schema)})",
                )
            specs = spec.items() if isinstance(spec, dict) else [("==", spec)]
            for op_name, value in specs:
                op = _OPS.get(op_name)
                if op is None:
                    self.error(floc, f"unknown operator {op_name!r} (use {sorted(_OPS)})")
                    continue
                if _is_var(value):
                    constraints.append(Constraint(fld, op, Var(value[1:])))
                    continue
                if schema is not None and fld in schema:
                    self.check_literal(floc, schema[fld], op, value)
                constraints.append(Constraint(fld, op, value))
        return Pattern(type_, tuple(constraints), bind[1:] if bind else None)

    def check_literal(self, loc: Loc, ty: str, op: Op, value: Any) -> None:
        allowed = _TYPES.get(ty, (object,))
        values = value if op in (Op.IN, Op.NOT_IN) and isinstance(value, list) else [value]
        if op in (Op.IN, Op.NOT_IN) and not isinstance(value, list):
            self.error(loc, f"{op.value} needs a list, got {value!r}")
            return
        for v in values:
            bad = v is not None and not isinstance(v, allowed)
            if ty in ("int", "float", "number") and isinstance(v, bool):
                bad = True
            if bad:
                self.error(loc, f"type mismatch: field is {ty}, compared ({op.value}) with {v!r}")

    # -- variables -------------------------------------------------------------------------

    def check_variables(self, rule_loc: Loc, conditions: tuple[Condition, ...]) -> set[str]:
        """Check every use is bound; return variables bound in every ``or`` alternative."""
        common: set[str] | None = None
        for variant in expand_or(conditions):
            bound: set[str] = set()
            for i, c in enumerate(variant):
                loc = [*rule_loc, "when", i]
                if isinstance(c, Pattern):
                    bound |= self.pattern_vars(c, bound, loc, escape=True)
                elif isinstance(c, Not | Exists):
                    self.pattern_vars(c.pattern, bound, loc, escape=False)
                elif isinstance(c, Test):
                    for v in c.variables:
                        if v not in bound:
                            self.error(loc, f"unbound variable ?{v} in test {c.source!r}")
            common = bound if common is None else common & bound
        return common or set()

    def pattern_vars(self, p: Pattern, bound: set[str], loc: Loc, *, escape: bool) -> set[str]:
        local: set[str] = set()
        for c in p.constraints:
            if isinstance(c.value, Var):
                name = c.value.name
                if name not in bound and name not in local:
                    if c.op is Op.EQ:
                        local.add(name)
                    else:
                        self.error(
                            [*loc, p.type, c.field],
                            f"unbound variable ?{name} used with {c.op.value}",
                        )
        if p.bind:
            if not escape:
                self.error(loc, "a negated pattern cannot bind the fact")
            local.add(p.bind)
        return local if escape else set()

    # -- actions ---------------------------------------------------------------------------

    def action(self, item: Any, loc: Loc, bound: set[str]) -> Callable[[Any], Any] | None:
        if item == "halt":
            item = {"halt": True}
        if not isinstance(item, dict) or not item:
            self.error(loc, "an action is a mapping like {emit: {...}}")
            return None
        item = dict(item)
        logical = bool(item.pop("logical", False))
        set_ = item.pop("set", None)
        args = item.pop("args", None)
        if len(item) != 1:
            self.error(loc, f"an action names exactly one action, got {sorted(item)}")
            return None
        ((kind, body),) = item.items()
        self.check_refs(body, loc, bound)
        self.check_refs(set_, loc, bound)
        self.check_refs(args, loc, bound)
        if kind == "assert":
            if not (
                isinstance(body, dict)
                and len(body) == 1
                and isinstance(next(iter(body.values())), dict)
            ):
                self.error([*loc, "assert"], "assert takes {type: {field: value}}")
                return None
            ((type_, fields),) = body.items()
            schema = self.model.schemas.get(type_)
            if schema is not None:
                for f in fields:
                    if f not in schema:
                        self.error(
                            [*loc, "assert", type_, f],
                            f"unknown field {f!r} for fact type {type_!r}",
                        )
            value = _value(fields)
            return lambda ctx: ctx.assert_fact(type_, value(ctx.bindings), logical=logical)
        if kind == "retract":
            if not _is_var(body):
                self.error([*loc, "retract"], "retract takes a fact variable like ?f")
                return None
            name = body[1:]
            return lambda ctx: ctx.retract(ctx.bindings[name])
        if kind == "modify":
            if not _is_var(body) or not isinstance(set_, dict):
                self.error([*loc, "modify"], "modify takes a fact variable and a 'set' mapping")
                return None
            name, value = body[1:], _value(set_)
            return lambda ctx: ctx.modify(ctx.bindings[name], value(ctx.bindings))
        if kind == "log":
            text = str(body)
            return lambda ctx: ctx.log(_TEMPLATE.sub(lambda m: str(ctx.bindings[m.group(1)]), text))
        if kind == "emit":
            value = _value(body if isinstance(body, dict) else {"value": body})
            return lambda ctx: ctx.emit(value(ctx.bindings))
        if kind == "halt":
            return lambda ctx: ctx.halt()
        if kind == "focus":
            group = str(body)
            return lambda ctx: ctx.focus(group)
        name = body if kind == "call" else kind
        arguments = args if kind == "call" else body
        if name not in self.actions:
            known = sorted(BUILTIN_ACTIONS | set(self.actions))
            self.error([*loc, kind], f"unknown action {name!r} (known: {known})")
            return None
        if arguments is not None and not isinstance(arguments, dict):
            self.error([*loc, kind], "action arguments must be a mapping")
            return None
        value = _value(arguments or {})
        return lambda ctx: ctx.call(name, **value(ctx.bindings))

    def check_refs(self, body: Any, loc: Loc, bound: set[str]) -> None:
        for v in sorted(_refs(body)):
            if v not in bound:
                self.error(loc, f"unbound variable ?{v} in action")

    def compile(self) -> list[Rule]:
        rules = []
        seen: set[str] = set()
        for i, rm in enumerate(self.model.rules):
            loc: Loc = ["rules", i]
            if rm.name in seen:
                self.error([*loc, "name"], f"duplicate rule name {rm.name!r}")
            seen.add(rm.name)
            conditions = tuple(self.conditions(rm.when, [*loc, "when"]))
            variants = _variants(conditions)
            if variants > self.limits.max_or_variants:
                self.error(
                    [*loc, "when"],
                    f"the 'or' conditions expand into {variants} alternatives; at most "
                    f"{self.limits.max_or_variants} (each is a chain of nodes)",
                )
                continue
            bound = self.check_variables(loc, conditions)
            actions = []
            for j, a in enumerate(rm.then):
                fn = self.action(a, [*loc, "then", j], bound)
                if fn is not None:
                    actions.append(fn)
            rules.append(
                Rule(
                    rm.name, conditions, tuple(actions), rm.salience, rm.group, rm.no_loop,
                    rm.description, tuple(rm.then),
                )
            )  # fmt: skip
        return rules


def _variants(conditions: tuple[Condition, ...]) -> int:
    """How many alternatives :func:`expand_or` would build, counted without building them."""
    n = 1
    for c in conditions:
        if isinstance(c, Or):
            n *= sum(_variants(alt) for alt in c.alternatives)
    return n


def _is_var(v: Any) -> bool:
    return isinstance(v, str) and len(v) > 1 and v[0] == "?" and v[1:].isidentifier()


def _refs(body: Any) -> set[str]:
    if _is_var(body):
        return {body[1:]}
    if isinstance(body, str):
        return set(_TEMPLATE.findall(body))
    if isinstance(body, dict):
        if set(body) == {"expr"} and isinstance(body["expr"], str):
            try:
                return set(compile_expression(body["expr"])[1])
            except ValidationError:
                return set()
        return set().union(*(_refs(v) for v in body.values())) if body else set()
    if isinstance(body, list):
        return set().union(*(_refs(v) for v in body)) if body else set()
    return set()


def _value(body: Any) -> Callable[[dict[str, Any]], Any]:
    """Compile an action argument: variables, ``{expr: ...}`` and ``{?x}`` templates resolved."""
    if _is_var(body):
        name = body[1:]
        return lambda b: b[name]
    if isinstance(body, str) and _TEMPLATE.search(body):
        return lambda b: _TEMPLATE.sub(lambda m: str(b[m.group(1)]), body)
    if isinstance(body, dict):
        if set(body) == {"expr"} and isinstance(body["expr"], str):
            fn, variables = compile_expression(body["expr"])
            return lambda b: fn(*[b[v] for v in variables])
        parts = {k: _value(v) for k, v in body.items()}
        return lambda b: {k: p(b) for k, p in parts.items()}
    if isinstance(body, list):
        items = [_value(v) for v in body]
        return lambda b: [i(b) for i in items]
    return lambda b: body


def parse_ruleset(
    data: Mapping[str, Any],
    actions: Mapping[str, Any] | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
) -> tuple[RulesetModel, list[Rule]]:
    """Validate and compile a ruleset mapping; raise ValidationError listing every problem."""
    check_tree(data, limits)
    try:
        model = RulesetModel.model_validate(data)
    except pydantic.ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise ValidationError(
            f"invalid ruleset: {len(details)} problem(s)", details=details
        ) from None
    compiler = _Compiler(model, actions or {}, limits)
    rules = compiler.compile()
    if compiler.errors:
        n = len(compiler.errors)
        first = compiler.errors[0]
        raise ValidationError(
            f"invalid ruleset: {n} problem(s); first at {'.'.join(map(str, first['loc']))}: {first['msg']}",
            details=compiler.errors,
        )
    return model, rules


def load_ruleset(
    source: str | Path | Mapping[str, Any],
    actions: Mapping[str, Any] | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
) -> tuple[RulesetModel, list[Rule]]:
    """Load a ruleset from a mapping or a ``.yaml``/``.yml``/``.json`` file."""
    if isinstance(source, Mapping):
        return parse_ruleset(source, actions, limits)
    path = Path(source)
    data = read_document(path, limits)
    if not isinstance(data, Mapping):
        raise ValidationError(f"{path}: a ruleset is a mapping with 'rules'")
    return parse_ruleset(data, actions, limits)
