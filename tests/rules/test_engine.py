"""The engine as a whole: truth maintenance, duplicate facts, tracing and explanation, and
the rules task type and CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from open_autoglm.rules.dsl import parse_ruleset
from open_autoglm.rules.engine import Engine
from open_autoglm.rules.facts import DuplicatePolicy


def _rules(*rules: dict) -> list:
    return parse_ruleset({"rules": list(rules)})[1]


def test_truth_maintenance_retracts_unsupported_facts() -> None:
    rules = _rules({
        "name": "alert", "when": [{"a": {"k": "?k"}}, {"not": {"ok": {"k": "?k"}}}],
        "then": [{"assert": {"alert": {"k": "?k"}}, "logical": True}],
    })  # fmt: skip
    e = Engine(rules)
    a = e.assert_fact("a", k=1)
    e.run()
    assert len(e.facts("alert")) == 1
    e.assert_fact("ok", k=1)  # the not fails -> support gone -> alert retracted
    assert e.facts("alert") == []
    e.run()
    e.retract(e.facts("ok")[0])
    e.run()
    assert len(e.facts("alert")) == 1
    e.retract(a)
    assert e.facts("alert") == []


def test_duplicate_policy() -> None:
    e = Engine()
    assert e.assert_fact("a", k=1) is e.assert_fact("a", k=1)
    e2 = Engine(duplicates=DuplicatePolicy.ALLOW)
    assert e2.assert_fact("a", k=1) is not e2.assert_fact("a", k=1)


def test_trace_and_explain() -> None:
    rules = _rules({"name": "r", "salience": 3, "when": [{"a": {"k": "?k"}}, {"b": {"k": "?k"}}]})
    e = Engine(rules)
    e.assert_fact("a", k=1)
    ex = e.explain("r")
    assert ex["matched"] is False and ex["variants"][0]["first_failing"]["index"] == 1
    e.assert_fact("b", k=1)
    e.run()
    assert e.trace[0].to_dict()["bindings"] == {"k": 1} and e.trace[0].salience == 3


def test_task_type_and_cli(tmp_path) -> None:
    from open_autoglm.cli.rules import app
    from open_autoglm.tasks.rules import rule_task_types

    (tt,) = rule_task_types()
    assert tt.name == "rule-inference"
    ruleset = {
        "rules": [{"name": "r", "when": [{"a": {"k": "?k"}}], "then": [{"emit": {"k": "?k"}}]}]
    }
    params = tt.params_model.model_validate({"ruleset": ruleset, "facts": [{"type": "a", "k": 7}]})

    class Ctx:
        input = None
        logs: list[str] = []

        def __init__(self, p):
            self.params = p

        def log(self, m, level="info"):
            self.logs.append(m)

        def service(self, name):
            raise KeyError(name)

    out = tt.handler(Ctx(params))
    assert out["emitted"] == [{"rule": "r", "k": 7}] and out["fired"] == 1
    rs, facts = tmp_path / "r.json", tmp_path / "f.json"
    rs.write_text(json.dumps(ruleset))
    facts.write_text(json.dumps([{"type": "a", "k": 3}]))
    runner = CliRunner()
    assert runner.invoke(app, ["validate", str(rs)]).exit_code == 0
    res = runner.invoke(app, ["eval", str(rs), "--facts", str(facts), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["emitted"][0]["k"] == 3
    rs.write_text(
        json.dumps({"rules": [{"name": "r", "when": [{"a": {}}], "then": [{"nope": {}}]}]})
    )
    assert runner.invoke(app, ["validate", str(rs)]).exit_code == 1
