"""A small, safe expression language for workflow conditions, fan-out lists and references.

Grammar (lowest to highest precedence)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := sum (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") sum)?
    sum     := term (("+" | "-") term)*
    term    := unary (("*" | "/" | "%") unary)*
    unary   := "-" unary | postfix
    postfix := atom ("." NAME | "[" expr "]")*
    atom    := NUMBER | STRING | "true" | "false" | "null" | "[" [expr ("," expr)*] "]"
             | NAME "(" [expr ("," expr)*] ")" | NAME | "(" expr ")"

The tokenizer and the Pratt parser are hand written: nothing reaches ``eval``, and values are
only ever JSON data (dict keys and list indices), never Python attributes. Source length,
nesting depth and the size of built strings/lists are bounded so a spec cannot make the
engine burn memory or stack.

Field access is forgiving on purpose: a missing dict key and any access on ``null`` give
``null``, so ``steps.optional_branch.output.label`` is ``null`` when that branch was skipped.
Type mismatches (``1 < "a"``, ``len(3)``) are errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from open_autoglm.errors import ValidationError
from open_autoglm.spec.expression_functions import FUNCTIONS, is_number, type_name

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_TREE_HEIGHT",
    "Attr",
    "Binary",
    "Call",
    "Expr",
    "ExpressionError",
    "Index",
    "ListExpr",
    "Literal",
    "Name",
    "Unary",
    "evaluate",
    "parse_expression",
    "references",
    "truthy",
]

MAX_LENGTH: Final = 2_000
MAX_DEPTH: Final = 40
# Operator chains (``a + b + c ...``, ``x.a.b.c ...``) parse in a loop but still make a deep
# tree; evaluation recurses over it, so the tree's height is bounded too.
MAX_TREE_HEIGHT: Final = 120
# Strings and lists an expression builds (``+``, ``str()``) stay below this many items.
MAX_VALUE_SIZE: Final = 100_000


class ExpressionError(ValidationError):
    """An expression failed to parse or evaluate; ``position`` is a 0-based column or -1."""

    def __init__(self, message: str, *, position: int = -1) -> None:
        where = f" at position {position}" if position >= 0 else ""
        super().__init__(f"{message}{where}", details=[{"loc": ["expression"], "msg": message}])
        self.reason = message
        self.position = position


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Name:
    name: str
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Attr:
    obj: Expr
    name: str
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Index:
    obj: Expr
    index: Expr
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Expr, ...]
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Expr
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    pos: int = 0


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple[Expr, ...]
    pos: int = 0


Expr = Literal | Name | Attr | Index | Call | Unary | Binary | ListExpr

# --------------------------------------------------------------------------- tokenizer

_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_TWO_CHAR: Final = frozenset({"==", "!=", "<=", ">="})
_ONE_CHAR: Final = frozenset("+-*/%<>()[],.")
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "num", "str", "name", "kw", "op", "end"
    value: Any
    pos: int


def _tokenize(src: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
        elif c.isdigit() or (c == "." and i + 1 < n and src[i + 1].isdigit()):
            start = i
            while i < n and (src[i].isdigit() or src[i] in "._"):
                i += 1
            if i < n and src[i] in "eE":
                i += 1
                if i < n and src[i] in "+-":
                    i += 1
                while i < n and src[i].isdigit():
                    i += 1
            text = src[start:i]
            try:
                value: Any = float(text) if any(ch in text for ch in ".eE") else int(text)
            except ValueError:
                raise ExpressionError(f"malformed number {text!r}", position=start) from None
            tokens.append(_Token("num", value, start))
        elif c in "'\"":
            start, i = i, i + 1
            out: list[str] = []
            while True:
                if i >= n:
                    raise ExpressionError("unterminated string", position=start)
                ch = src[i]
                if ch == c:
                    i += 1
                    break
                if ch == "\\":
                    if i + 1 >= n or src[i + 1] not in _ESCAPES:
                        raise ExpressionError("bad escape in string", position=i)
                    out.append(_ESCAPES[src[i + 1]])
                    i += 2
                else:
                    out.append(ch)
                    i += 1
            tokens.append(_Token("str", "".join(out), start))
        elif c.isalpha() or c == "_":
            start = i
            while i < n and (src[i].isalnum() or src[i] == "_"):
                i += 1
            word = src[start:i]
            tokens.append(_Token("kw" if word in _KEYWORDS else "name", word, start))
        elif src[i : i + 2] in _TWO_CHAR:
            tokens.append(_Token("op", src[i : i + 2], i))
            i += 2
        elif c in _ONE_CHAR:
            tokens.append(_Token("op", c, i))
            i += 1
        else:
            raise ExpressionError(f"unexpected character {c!r}", position=i)
    tokens.append(_Token("end", None, n))
    return tokens


# --------------------------------------------------------------------------- parser

# Binding powers for infix operators (Pratt): higher binds tighter.
_INFIX: Final = {
    "or": 1,
    "and": 2,
    "==": 4,
    "!=": 4,
    "<": 4,
    "<=": 4,
    ">": 4,
    ">=": 4,
    "in": 4,
    "not in": 4,
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
    "%": 6,
}
_NOT_BP: Final = 3
_NEG_BP: Final = 7
_COMPARISONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "not in"})


class _Parser:
    def __init__(self, src: str) -> None:
        self.tokens = _tokenize(src)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, value: str) -> _Token:
        tok = self.next()
        if tok.kind != "op" or tok.value != value:
            raise ExpressionError(f"expected {value!r}, found {_describe(tok)}", position=tok.pos)
        return tok

    def infix_op(self) -> str | None:
        tok = self.peek()
        if tok.kind == "op" and tok.value in _INFIX:
            return str(tok.value)
        if tok.kind == "kw":
            if tok.value in ("and", "or", "in"):
                return str(tok.value)
            nxt = self.tokens[self.i + 1]
            if tok.value == "not" and nxt.kind == "kw" and nxt.value == "in":
                return "not in"
        return None

    def parse(self, min_bp: int = 0) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(
                f"expression nested deeper than {MAX_DEPTH}", position=self.peek().pos
            )
        left = self.prefix()
        while True:
            op = self.infix_op()
            if op is None or _INFIX[op] <= min_bp:
                break
            tok = self.next()
            if op == "not in":
                self.next()
            right = self.parse(_INFIX[op])
            if op in _COMPARISONS and self.infix_op() in _COMPARISONS:
                raise ExpressionError(
                    "comparisons cannot be chained; use 'and'", position=self.peek().pos
                )
            left = Binary(op, left, right, tok.pos)
        self.depth -= 1
        return left

    def prefix(self) -> Expr:
        tok = self.next()
        node: Expr
        if tok.kind in ("num", "str"):
            node = Literal(tok.value, tok.pos)
        elif tok.kind == "kw" and tok.value in ("true", "false", "null"):
            node = Literal({"true": True, "false": False, "null": None}[tok.value], tok.pos)
        elif tok.kind == "kw" and tok.value == "not":
            return Unary("not", self.parse(_NOT_BP), tok.pos)
        elif tok.kind == "op" and tok.value == "-":
            return Unary("-", self.parse(_NEG_BP), tok.pos)
        elif tok.kind == "op" and tok.value == "(":
            node = self.parse()
            self.expect(")")
        elif tok.kind == "op" and tok.value == "[":
            node = ListExpr(tuple(self.sequence("]")), tok.pos)
        elif tok.kind == "name":
            if self.peek().kind == "op" and self.peek().value == "(":
                if tok.value not in FUNCTIONS:
                    raise ExpressionError(f"unknown function {tok.value!r}", position=tok.pos)
                self.next()
                node = Call(tok.value, tuple(self.sequence(")")), tok.pos)
            else:
                node = Name(tok.value, tok.pos)
        else:
            raise ExpressionError(f"unexpected {_describe(tok)}", position=tok.pos)
        return self.postfix(node)

    def postfix(self, node: Expr) -> Expr:
        while self.peek().kind == "op" and self.peek().value in (".", "["):
            tok = self.next()
            if tok.value == ".":
                name = self.next()
                # Keywords are fine as keys: ``output.in`` reads the key "in".
                if name.kind not in ("name", "kw"):
                    raise ExpressionError(
                        f"expected a field name after '.', found {_describe(name)}",
                        position=name.pos,
                    )
                node = Attr(node, str(name.value), tok.pos)
            else:
                index = self.parse()
                self.expect("]")
                node = Index(node, index, tok.pos)
        return node

    def sequence(self, close: str) -> list[Expr]:
        items: list[Expr] = []
        if self.peek().kind == "op" and self.peek().value == close:
            self.next()
            return items
        while True:
            items.append(self.parse())
            tok = self.next()
            if tok.kind == "op" and tok.value == close:
                return items
            if tok.kind != "op" or tok.value != ",":
                raise ExpressionError(
                    f"expected ',' or {close!r}, found {_describe(tok)}", position=tok.pos
                )


def _describe(tok: _Token) -> str:
    if tok.kind == "end":
        return "end of expression"
    return f"{tok.value!r}"


def parse_expression(src: str) -> Expr:
    """Parse ``src`` into an AST; raise :class:`ExpressionError` naming the position."""
    if len(src) > MAX_LENGTH:
        raise ExpressionError(
            f"expression longer than {MAX_LENGTH} characters", position=MAX_LENGTH
        )
    parser = _Parser(src)
    if parser.peek().kind == "end":
        raise ExpressionError("empty expression", position=0)
    node = parser.parse()
    tail = parser.peek()
    if tail.kind != "end":
        raise ExpressionError(f"unexpected {_describe(tail)}", position=tail.pos)
    _check_height(node)
    return node


def _children(node: Expr) -> tuple[Expr, ...]:
    if isinstance(node, Attr):
        return (node.obj,)
    if isinstance(node, Index):
        return (node.obj, node.index)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, ListExpr):
        return node.items
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    return ()


def _check_height(root: Expr) -> None:
    stack = [(root, 1)]
    while stack:  # iterative: the point is not to recurse over an unchecked tree
        node, height = stack.pop()
        if height > MAX_TREE_HEIGHT:
            raise ExpressionError(
                f"expression nested deeper than {MAX_TREE_HEIGHT} operations", position=node.pos
            )
        stack.extend((child, height + 1) for child in _children(node))


# --------------------------------------------------------------------------- static analysis


def references(node: Expr) -> Iterator[tuple[str, ...]]:
    """Yield the static access path of every variable use, e.g. ``("steps", "a", "output")``.

    The path stops at the first dynamic part (``steps[x]``), so a validator can check the
    root name and the step/input name that follows it.
    """
    if isinstance(node, Name):
        yield (node.name,)
    elif isinstance(node, Attr | Index):
        path = _static_path(node)
        if path is not None:
            yield path
        else:
            yield from references(node.obj)
        if isinstance(node, Index):
            yield from references(node.index)
    elif isinstance(node, Call | ListExpr):
        for arg in node.args if isinstance(node, Call) else node.items:
            yield from references(arg)
    elif isinstance(node, Unary):
        yield from references(node.operand)
    elif isinstance(node, Binary):
        yield from references(node.left)
        yield from references(node.right)


def _static_path(node: Expr) -> tuple[str, ...] | None:
    if isinstance(node, Name):
        return (node.name,)
    if isinstance(node, Attr):
        base = _static_path(node.obj)
        return None if base is None else (*base, node.name)
    if isinstance(node, Index) and isinstance(node.index, Literal):
        base = _static_path(node.obj)
        if base is None:
            return None
        if isinstance(node.index.value, str):
            return (*base, node.index.value)
        return base  # a list index: the path up to the list is still the reference
    return None


# --------------------------------------------------------------------------- evaluation


def truthy(value: Any) -> bool:
    """JSON truthiness: null, false, 0, "", [] and {} are false."""
    return bool(value)


def _bounded(value: Any, pos: int) -> Any:
    if isinstance(value, str | list) and len(value) > MAX_VALUE_SIZE:
        raise ExpressionError(f"value longer than {MAX_VALUE_SIZE} items", position=pos)
    return value


def _need(cond: bool, message: str, pos: int) -> None:
    if not cond:
        raise ExpressionError(message, position=pos)


def evaluate(node: Expr, context: Mapping[str, Any]) -> Any:
    """Evaluate ``node`` against JSON data ``context`` (``inputs``, ``steps``, ``item`` ...)."""
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Name):
        if node.name not in context:
            raise ExpressionError(f"unknown name {node.name!r}", position=node.pos)
        return context[node.name]
    if isinstance(node, Attr):
        return _lookup(evaluate(node.obj, context), node.name, node.pos)
    if isinstance(node, Index):
        return _lookup(evaluate(node.obj, context), evaluate(node.index, context), node.pos)
    if isinstance(node, ListExpr):
        return [evaluate(item, context) for item in node.items]
    if isinstance(node, Call):
        return _call(node, [evaluate(a, context) for a in node.args])
    if isinstance(node, Unary):
        value = evaluate(node.operand, context)
        if node.op == "not":
            return not truthy(value)
        _need(is_number(value), f"cannot negate {type_name(value)}", node.pos)
        return -value
    return _binary(node, context)


def _lookup(obj: Any, key: Any, pos: int) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        _need(isinstance(key, str), f"object keys are strings, not {type_name(key)}", pos)
        return obj.get(key)
    if isinstance(obj, list | str):
        _need(
            isinstance(key, int) and not isinstance(key, bool),
            f"{type_name(obj)} index must be an integer, not {type_name(key)}",
            pos,
        )
        _need(-len(obj) <= key < len(obj), f"index {key} out of range (length {len(obj)})", pos)
        return obj[key]
    raise ExpressionError(f"cannot access {key!r} on a {type_name(obj)}", position=pos)


def _call(node: Call, args: list[Any]) -> Any:
    impl, lo, hi = FUNCTIONS[node.func]
    _need(
        lo <= len(args) <= hi,
        f"{node.func}() takes {lo if lo == hi else f'{lo} to {hi}'} argument(s), got {len(args)}",
        node.pos,
    )
    try:
        return _bounded(impl(*args), node.pos)
    except TypeError as exc:
        raise ExpressionError(str(exc), position=node.pos) from None


def _binary(node: Binary, context: Mapping[str, Any]) -> Any:
    op = node.op
    left = evaluate(node.left, context)
    if op == "and":
        return evaluate(node.right, context) if truthy(left) else left
    if op == "or":
        return left if truthy(left) else evaluate(node.right, context)
    right = evaluate(node.right, context)
    pos = node.pos
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op in ("in", "not in"):
        _need(
            isinstance(right, list | dict | str),
            f"'{op}' needs a list, object or string on the right, not {type_name(right)}",
            pos,
        )
        _need(
            not isinstance(right, str) or isinstance(left, str),
            f"'{op}' a string needs a string on the left",
            pos,
        )
        found = left in right
        return found if op == "in" else not found
    if op in ("<", "<=", ">", ">="):
        _need(
            (is_number(left) and is_number(right))
            or (isinstance(left, str) and isinstance(right, str)),
            f"cannot compare {type_name(left)} {op} {type_name(right)}",
            pos,
        )
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
    if op == "+":
        if isinstance(left, str) and isinstance(right, str):
            return _bounded(left + right, pos)
        if isinstance(left, list) and isinstance(right, list):
            return _bounded(left + right, pos)
    _need(
        is_number(left) and is_number(right),
        f"cannot apply {op!r} to {type_name(left)} and {type_name(right)}",
        pos,
    )
    if op in ("/", "%"):
        _need(right != 0, "division by zero", pos)
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        return left / right
    return left % right


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1, unlike Python.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)
