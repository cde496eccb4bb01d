"""The pure pieces behind ruleset admission: rate windows, the compiled-ruleset cache, decide()."""

from __future__ import annotations

import pytest

from helpers.clock import FakeClock
from open_autoglm import errors
from open_autoglm.rules.admission import RulesetAdmission, SubmitRates
from open_autoglm.rules.catalog import RulesetCatalog
from open_autoglm.rules.policy import POLICY_ACTIONS
from open_autoglm.spec.task import TaskSpec


def test_submit_rates_slide_per_client():
    clock = FakeClock()
    rates = SubmitRates(clock=clock, max_clients=2)
    assert rates.hit("a") == {"per_second": 1.0, "per_minute": 1.0}
    assert rates.hit("a")["per_minute"] == 2.0
    clock.now = 1001.5  # half of the previous second still overlaps the window
    assert rates.hit("a") == {"per_second": 2.0, "per_minute": 3.0}
    assert rates.hit("b")["per_minute"] == 1.0  # clients are counted apart
    clock.now = 1060.0  # second 1000 has left the minute (this one and the 59 before it)
    assert rates.hit("a")["per_minute"] == 2.0
    rates.hit("c")  # over max_clients: the least recently seen ("b") is forgotten
    assert rates.hit("b")["per_minute"] == 1.0


def _store() -> dict[str, dict[str, object]]:
    rule = {
        "name": "vip",
        "when": [{"task": {"task_type": "echo"}}],
        "then": [{"tag": {"tag": "v1"}}],
    }
    return {"p": {"name": "p", "version": 1, "source": {"rules": [rule]}}}


def _load(store: dict[str, dict[str, object]]):
    def load(name: str) -> dict[str, object]:
        if name not in store:
            raise errors.NotFoundError(f"ruleset {name!r} not found")
        return store[name]

    return load


def test_catalog_caches_until_invalidated_or_stale():
    clock, store = FakeClock(), _store()
    catalog = RulesetCatalog(_load(store), POLICY_ACTIONS, ttl_s=5, clock=clock)
    first = catalog.compiled("p")
    assert catalog.is_fresh("p") and catalog.compiled("p") is first
    store["p"] = {**store["p"], "version": 2}
    assert catalog.compiled("p").version == 1  # cached
    clock.now += 5
    assert not catalog.is_fresh("p") and catalog.compiled("p").version == 2
    store["p"] = {**store["p"], "version": 3}
    catalog.invalidate("p")
    assert catalog.compiled("p").version == 3
    with pytest.raises(errors.NotFoundError):
        catalog.get("missing")


def test_decide_rewrites_a_copy_and_clamps_priority():
    store = {
        "p": {
            "version": 4,
            "source": {
                "rules": [
                    {"name": "up", "when": [{"task": {}}], "then": [{"set_priority": {"priority": 42}}]}
                ]
            },
        }
    }  # fmt: skip
    admission = RulesetAdmission(RulesetCatalog(_load(store), POLICY_ACTIONS), "p")
    spec = TaskSpec(task_type="echo", priority=3)
    new, [(kind, event)] = admission.decide(spec, "ip:10.0.0.1")
    assert spec.priority == 3 and new.priority == 9
    assert kind == "policy" and event["priority"] == {"from": 3, "to": 9}
    assert event["version"] == 4


def test_decide_fails_closed_when_the_ruleset_loops():
    loop = {
        "name": "loop",
        "when": [{"counter": {"n": "?n"}, "bind": "?c"}],
        "then": [{"modify": "?c", "set": {"n": {"expr": "?n + 1"}}}],
    }
    start = {"name": "start", "when": [{"task": {}}], "then": [{"assert": {"counter": {"n": 0}}}]}
    store = {"p": {"version": 1, "source": {"rules": [start, loop]}}}
    admission = RulesetAdmission(RulesetCatalog(_load(store), POLICY_ACTIONS), "p", max_firings=20)
    with pytest.raises(errors.UnavailableError, match="'p' failed"):
        admission.decide(TaskSpec(task_type="echo"), "ip:x")


def test_rules_read_nested_params_and_metadata():
    rules = [
        {
            "name": "too_long",
            "when": [
                {"task": {"params": "?p", "metadata": "?m"}},
                {"test": "?p.max_tokens > 512 and ?m['team']['tier'] != 'gold'"},
            ],
            "then": [{"block": {"reason": "max_tokens {?p} over the limit"}}],
        },
        {
            "name": "first_stop_word",
            "when": [{"task": {"params": "?p"}}, {"test": "?p['stop'][0] == 'END'"}],
            "then": [{"tag": {"tag": "ends"}}],
        },
    ]
    store = {"p": {"version": 1, "source": {"rules": rules}}}
    admission = RulesetAdmission(RulesetCatalog(_load(store), POLICY_ACTIONS), "p")

    def spec(max_tokens: int, tier: str, stop: list[str]) -> TaskSpec:
        return TaskSpec(
            task_type="echo",
            params={"max_tokens": max_tokens, "stop": stop},
            metadata={"team": {"tier": tier}},
        )

    with pytest.raises(errors.PolicyBlockedError) as blocked:
        admission.decide(spec(1000, "silver", ["x"]), "ip:x")
    assert blocked.value.rule == "too_long"
    admission.decide(spec(1000, "gold", ["x"]), "ip:x")  # gold may
    new, _ = admission.decide(spec(10, "silver", ["END", "x"]), "ip:x")
    assert "ends" in new.metadata["tags"]
    new, _ = admission.decide(spec(10, "silver", []), "ip:x")  # a missing item reads as null
    assert "ends" not in new.metadata.get("tags", [])


def test_field_access_is_bounded_and_never_python_attributes():
    from open_autoglm.rules.expressions import MAX_ACCESS_DEPTH, compile_expression

    fn, _ = compile_expression("?x.a.b[1]")
    assert fn({"a": {"b": [5, 6]}}) == 6
    assert fn({"a": None}) is None
    deep = "?x" + ".a" * (MAX_ACCESS_DEPTH + 1)
    for bad in (deep, "?x.__class__", "?x[1:2]", "?x.a()"):
        with pytest.raises(errors.ValidationError):
            compile_expression(bad)
