"""The safe expression language and ``${...}`` templates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from open_autoglm.spec.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    ExpressionError,
    evaluate,
    parse_expression,
    references,
)
from open_autoglm.spec.templates import compile_value, iter_templates, render_value

CTX: dict[str, Any] = {
    "inputs": {"text": "Hello World", "n": 7, "tags": ["a", "b"], "cfg": {"deep": {"k": 1}}},
    "steps": {"c": {"output": {"label": "spam", "score": 0.91}, "status": "succeeded"}},
    "item": {"id": 3},
}


def ev(src: str) -> Any:
    return evaluate(parse_expression(src), CTX)


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-2 - -3", 1),
        ("7 % 4 + 10 / 4", 5.5),
        ("1e3 + .5", 1000.5),
        ("'a' + \"b\"", "ab"),
        ("[1, 2] + [3]", [1, 2, 3]),
        ("'it\\'s'", "it's"),
        ("true and not false", True),
        ("null or 'dflt'", "dflt"),
        ("0 and 1", 0),
        ("1 == 1.0 and 1 != 2", True),
        ("true == 1", False),  # JSON booleans are not numbers
        ("'b' in inputs.tags and 'z' not in inputs.tags", True),
        ("'ell' in inputs.text", True),
        ("'deep' in inputs.cfg", True),
        ("inputs.n >= 7 and inputs.n < 8", True),
        ("'abc' < 'abd'", True),
        ("inputs.tags[1]", "b"),
        ("inputs.tags[-1]", "b"),
        ("inputs.cfg['deep'].k", 1),
        ("inputs.cfg.missing.k", None),  # null-propagating access
        ("steps.c.output.label == 'spam' and steps.c.output.score > 0.9", True),
        ("item.id * 2", 6),
        ("len(inputs.tags) + len(inputs.text) + len(inputs.cfg)", 14),
        ("lower(inputs.text) + upper('x')", "hello worldX"),
        ("min(3, 1, 2) + max([4, 9])", 10),
        ("abs(-2.5) + round(2.25) + round(1.234, 1)", 5.7),
        ("str(1) + str(true) + str(null)", "1truenull"),
        ("int('42') + float('0.5')", 42.5),
        (
            "contains(inputs.tags, 'a') and startswith(inputs.text, 'He') and endswith('ab', 'b')",
            True,
        ),
        ("steps.c.output.in", None),  # keywords work as keys after '.'
        ("[]", []),
    ],
)
def test_evaluates(src: str, expected: Any) -> None:
    assert ev(src) == expected


@pytest.mark.parametrize(
    ("src", "message", "position"),
    [
        ("1 +", "unexpected end of expression", 3),
        ("(1 + 2", "expected ')', found end of expression", 6),
        ("a.", "expected a field name after '.', found end of expression", 2),
        ("1 2", "unexpected 2", 2),
        ("'abc", "unterminated string", 0),
        ("a @ b", "unexpected character '@'", 2),
        ("os.system('x')", "unexpected '('", 9),  # no calls on values, only named functions
        ("eval('1')", "unknown function 'eval'", 0),
        ("a == b == c", "comparisons cannot be chained; use 'and'", 7),
        ("f(1,", "unknown function 'f'", 0),
        ("len(1,", "unexpected end of expression", 6),
        ("", "empty expression", 0),
        ("1..2", "malformed number '1..2'", 0),
        ("'\\q'", "bad escape in string", 1),
    ],
)
def test_parse_errors_name_the_position(src: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_expression(src)
    assert info.value.reason == message
    assert info.value.position == position
    assert f"at position {position}" in info.value.message


def test_length_and_depth_are_bounded() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        parse_expression("1+" * MAX_LENGTH + "1")
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse_expression("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse_expression("not " * (MAX_DEPTH + 1) + "true")
    parse_expression("(" * 10 + "1" + ")" * 10)
    # Long operator chains parse in a loop but would make evaluation recurse deeply.
    with pytest.raises(ExpressionError, match="deeper than 120 operations"):
        parse_expression("1+" * 150 + "1")
    with pytest.raises(ExpressionError, match="deeper than 120 operations"):
        parse_expression("a" + ".b" * 150)
    assert evaluate(parse_expression("1+" * 100 + "1"), {}) == 101


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("1 / 0", "division by zero"),
        ("1 < 'a'", "cannot compare number < string"),
        ("'a' - 'b'", "cannot apply '-' to string and string"),
        ("'a' * 1000000", "cannot apply '*' to string and number"),
        ("len(3)", "len() needs a string, list or object, not number"),
        ("inputs.tags[5]", "index 5 out of range (length 2)"),
        ("inputs.tags['x']", "list index must be an integer, not string"),
        ("inputs.n.x", "cannot access 'x' on a number"),
        ("nothing", "unknown name 'nothing'"),
        ("int('x')", "int() cannot convert 'x'"),
        ("lower(1)", "lower() needs strings"),
        ("round(1, 2, 3)", "round() takes 1 to 2 argument(s), got 3"),
        ("-'a'", "cannot negate string"),
        ("1 in 2", "'in' needs a list, object or string on the right, not number"),
    ],
)
def test_evaluation_errors_are_clear(src: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        ev(src)
    assert info.value.reason == message


def test_no_python_attribute_access() -> None:
    # Field access only reads dict keys: a Python attribute name is just a missing key.
    assert ev("inputs.__class__") is None
    with pytest.raises(ExpressionError, match="string index must be an integer"):
        evaluate(parse_expression("x.upper"), {"x": "abc"})


def test_built_values_are_bounded() -> None:
    big = {"s": "x" * 60_000}
    with pytest.raises(ExpressionError, match="value longer than"):
        evaluate(parse_expression("s.s + s.s"), {"s": big})


def test_references_give_static_paths() -> None:
    expr = parse_expression("steps.a.output[0].label == inputs['x'] and len(item) > steps[k].y")
    assert list(references(expr)) == [
        ("steps", "a", "output", "label"),  # a list index keeps the static path going
        ("inputs", "x"),
        ("item",),
        ("steps",),
        ("k",),
    ]


def test_templates_whole_reference_keeps_type_and_embedded_interpolates() -> None:
    compiled = compile_value(
        {
            "raw": "${inputs.tags}",
            "text": "n=${inputs.n}, tags=${inputs.tags}, label=${steps.c.output.label}",
            "escaped": "$${not a ref}",
            "plain": "no refs",
            "nested": [{"k": "${item.id + 1}"}, 5],
            "brace_in_string": "${'}' + 'x'}",
        }
    )
    assert render_value(compiled, CTX) == {
        "raw": ["a", "b"],
        "text": 'n=7, tags=["a","b"], label=spam',
        "escaped": "${not a ref}",
        "plain": "no refs",
        "nested": [{"k": 4}, 5],
        "brace_in_string": "}x",
    }


def test_template_errors_report_position_in_the_whole_string() -> None:
    found = list(iter_templates({"a": ["ok", "value: ${1 +}"], "b": "x ${unclosed"}))
    (loc1, _, err1), (loc2, _, err2) = found
    assert loc1 == ("a", 1) and isinstance(err1, ExpressionError)
    assert err1.position == 12
    assert loc2 == ("b",) and isinstance(err2, ExpressionError)
    assert err2.reason == "unterminated '${' reference" and err2.position == 2


@given(st.text(max_size=60))
def test_parser_never_raises_anything_but_expression_error(src: str) -> None:
    try:
        expr = parse_expression(src)
    except ExpressionError:
        return
    try:
        evaluate(expr, CTX)
    except ExpressionError:
        pass


@given(st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_arithmetic_matches_python(a: int, b: int) -> None:
    assert evaluate(parse_expression(f"({a}) + ({b}) * 2 - ({a})"), {}) == a + b * 2 - a
    assert evaluate(parse_expression(f"({a}) < ({b}) or ({a}) == ({b})"), {}) == (a <= b)
