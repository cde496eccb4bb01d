"""Parsing bombs: YAML aliases, deep nesting and odd YAML types are refused before they cost
anything, by the server and by the CLI, against one shared set of limits."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from open_autoglm.cli.main import app as cli
from open_autoglm.errors import ValidationError
from open_autoglm.spec.limits import InputLimits, check_tree, load_yaml

MB = 1024 * 1024


def alias_bomb(levels: int, key: str = "description") -> str:
    """A few hundred bytes that expand to 9**levels strings once anything walks them."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{key}: *l{levels}\n"


def _workflow(extra: str) -> str:
    return "name: w\nsteps:\n  - name: a\n    task: {task_type: echo, input: 1}\n" + extra


def _measured(call: Any) -> tuple[Any, float, float]:
    """``call()``'s result, the process CPU seconds and the peak traced MB it took."""
    tracemalloc.start()
    cpu = time.process_time()
    try:
        out = call()
        return out, time.process_time() - cpu, tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("levels", [7, 9])
@pytest.mark.parametrize("route", ["/v1/workflows/validate", "/v1/workflows"])
def test_alias_bombs_are_refused_promptly(api: TestClient, levels: int, route: str) -> None:
    bomb = _workflow(alias_bomb(levels))
    assert len(bomb) < 700
    r, cpu_s, peak_mb = _measured(lambda: api.post(route, json={"spec": bomb}))
    assert r.status_code == 422, r.text
    detail = r.json()["error"]["details"][0]
    assert detail["loc"] == ["spec"] and "aliases expand" in detail["msg"]
    assert cpu_s < 1.0 and peak_mb < 50, (cpu_s, peak_mb)


def test_billion_laughs_ruleset_via_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(alias_bomb(9, key="rules"))
    result, cpu_s, peak_mb = _measured(
        lambda: CliRunner().invoke(cli, ["rules", "validate", str(path)])
    )
    assert result.exit_code == 1
    assert "aliases expand" in result.output
    assert cpu_s < 1.0 and peak_mb < 50, (cpu_s, peak_mb)


def test_aliases_are_counted_even_when_small() -> None:
    many = "a: &a 1\nb: [" + ",".join(["*a"] * 101) + "]\n"
    with pytest.raises(ValidationError, match="more than 100 YAML aliases"):
        load_yaml(many)
    assert load_yaml("a: &a {x: 1}\nb: *a\n") == {"a": {"x": 1}, "b": {"x": 1}}
    with pytest.raises(ValidationError, match="contains it"):
        load_yaml("a: &a [*a]\n")
    assert load_yaml("a: &a 1\nb: [*a]\n", InputLimits(max_yaml_aliases=1)) == {"a": 1, "b": [1]}


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        ("description: !!binary aGVsbG8=\n", "'binary' is not allowed"),
        ("outputs: !!set {a, b}\n", "'set' is not allowed"),
        ("outputs: {1: x}\n", "keys must be strings"),
        ("outputs: {yes: x}\n", "keys must be strings"),
        ("outputs: !!python/object:os.system {}\n", "could not determine a constructor"),
    ],
)
def test_yaml_types_json_cannot_hold_are_refused(api: TestClient, extra: str, msg: str) -> None:
    for route in ("/v1/workflows/validate", "/v1/workflows"):
        r = api.post(route, json={"spec": _workflow(extra)})
        assert r.status_code == 422, r.text
        detail = r.json()["error"]["details"][0]
        assert detail["loc"] == ["spec"] and msg in detail["msg"], detail


def test_timestamps_stay_text() -> None:
    assert load_yaml("when: 2024-01-01 10:00:00\n") == {"when": "2024-01-01 10:00:00"}


def test_one_limit_set_for_every_json_body(api: TestClient) -> None:
    deep: Any = 1
    for _ in range(100):
        deep = {"a": deep}
    for route in ("/v1/tasks", "/v1/workflows/validate", "/v1/models/registry", "/v1/rulesets/x"):
        method = api.put if route == "/v1/rulesets/x" else api.post
        r = method(route, json={"spec": deep, "input": deep, "options": deep, "rules": deep})
        assert r.status_code == 422, (route, r.text)
        assert "nested deeper than 64" in r.text, route


def test_check_tree_names_the_value_over_a_limit() -> None:
    limits = InputLimits(max_string=100, max_nodes=1000)
    with pytest.raises(ValidationError) as info:
        check_tree({"steps": [{"input": "x" * 101}]}, limits)
    assert info.value.details[0]["loc"] == ["steps", 0, "input"]
    with pytest.raises(ValidationError, match="more than 1000 values"):
        check_tree(list(range(1000)), limits)
