"""Expensive evaluation: rule expressions, 'or' expansion, firings and CPU are all bounded, and
going past a bound is a 422 that names the field, not an allocation or a stalled server."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from helpers.security import app_client

MB = 1024 * 1024


def _ruleset(when: list[Any], then: list[Any] | None = None) -> dict[str, Any]:
    return {"rules": [{"name": "r", "when": when, "then": then or [{"log": "hit"}]}]}


def _loc(r: Any) -> list[Any]:
    return r.json()["error"]["details"][0]["loc"]  # type: ignore[no-any-return]


def test_string_multiplication_is_refused_not_allocated(api: TestClient) -> None:
    tracemalloc.start()
    try:
        r = api.put(
            "/v1/rulesets/mul", json=_ruleset([{"x": {}}, {"test": "'a' * 400000000 == ''"}])
        )
        peak = tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()
    assert r.status_code == 422, r.text
    assert _loc(r) == ["rules", 0, "when", 1, "test"] and "at most 100000" in r.text
    assert peak < 50
    # Through a variable the size is only known when the rule runs: refused then, the same way.
    stored = api.put(
        "/v1/rulesets/mulvar", json=_ruleset([{"x": {"n": "?n"}}, {"test": "'a' * ?n == ''"}])
    )
    assert stored.status_code == 201, stored.text
    tracemalloc.start()
    try:
        r = api.post(
            "/v1/rulesets/mulvar/evaluate", json={"facts": [{"type": "x", "n": 400_000_000}]}
        )
        peak = tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()
    assert r.status_code == 422 and "at most 100000" in r.text, r.text
    assert peak < 50


def test_string_formatting_and_long_sources_are_refused(api: TestClient) -> None:
    r = api.put("/v1/rulesets/fmt", json=_ruleset([{"x": {}}, {"test": "'%0999999999d' % 1"}]))
    assert r.status_code == 422 and "not string formatting" in r.text
    long_test = " + ".join(["1"] * 100_000) + " > 0"  # the 100k-term test
    r = api.put("/v1/rulesets/long", json=_ruleset([{"x": {}}, {"test": long_test}]))
    assert r.status_code == 422 and _loc(r) == ["rules", 0, "when", 1, "test"]
    assert "longer than 2000 characters" in r.text


def test_or_explosion_is_counted_not_built(api: TestClient) -> None:
    """24 two-way 'or' conditions would build 2**24 chains; refused from the count."""
    ors = [{"or": [{"a": {"v": i}}, {"b": {"v": i}}]} for i in range(24)]
    started = time.process_time()
    r = api.put("/v1/rulesets/ors", json=_ruleset(ors))
    assert time.process_time() - started < 1.0
    assert r.status_code == 422, r.text
    assert _loc(r) == ["rules", 0, "when"] and "16777216 alternatives" in r.text
    # Eight are 256 alternatives: at the bound, accepted.
    assert api.put("/v1/rulesets/ors8", json=_ruleset(ors[:8])).status_code == 201


def test_max_firings_has_a_server_ceiling(api: TestClient) -> None:
    assert api.put("/v1/rulesets/ok", json=_ruleset([{"x": {}}])).status_code == 201
    r = api.post("/v1/rulesets/ok/evaluate", json={"facts": [], "max_firings": 1_000_000})
    assert r.status_code == 422 and _loc(r) == ["max_firings"]
    task = {
        "task_type": "rule-inference",
        "params": {"ruleset": "ok", "facts": [], "max_firings": 1_000_000},
    }
    with api.stream("POST", "/v1/infer", json=task) as r:
        body = r.read().decode()
    assert r.status_code == 422 and "at most 100000" in body


def test_evaluation_has_a_cpu_budget(tmp_path: Path) -> None:
    """A join whose cross product explodes on the client's facts stops at the budget."""
    cross = _ruleset([{"p": {"v": "?a"}}, {"p": {"v": "?b"}}, {"p": {"v": "?c"}}])
    # The same cross product with a last condition no fact meets: no rule ever fires, the
    # cost is all in building partial matches.
    silent = _ruleset([{"p": {"v": "?a"}}, {"p": {"v": "?b"}}, {"p": {"v": "?c"}}, {"q": {}}])
    facts = [{"type": "p", "v": i} for i in range(150)]  # 3.4 million partial matches
    with app_client(tmp_path / "data", limits={"eval_cpu_s": 0.2}) as api:
        for name, ruleset in (("cross", cross), ("silent", silent)):
            assert api.put(f"/v1/rulesets/{name}", json=ruleset).status_code == 201
            started = time.process_time()
            r = api.post(f"/v1/rulesets/{name}/evaluate", json={"facts": facts})
            spent = time.process_time() - started
            assert r.status_code == 422, r.text[:300]
            assert _loc(r) == ["facts"] and "more than 0.2 CPU seconds" in r.text
            assert spent < 5.0  # the budget, not the 3.4 million matches


def test_the_admission_ruleset_has_a_cpu_budget_per_task(tmp_path: Path) -> None:
    """A task's metadata are facts of the admission ruleset: a client sending many of them
    to a rule that joins them meets the budget, and the task is refused, not the server."""
    join = _ruleset(
        [
            {"metadata": {"key": "?a"}},
            {"metadata": {"key": "?b"}},
            {"metadata": {"key": "?c"}},
            {"never": {}},
        ]
    )
    with app_client(
        tmp_path / "data", admission_ruleset="adm", limits={"admission_cpu_s": 0.2}
    ) as api:
        assert api.put("/v1/rulesets/adm", json=join).status_code == 201
        small = api.post("/v1/tasks", json={"task_type": "echo", "input": 1, "metadata": {"a": 1}})
        assert small.status_code == 202, small.text
        many = {f"k{i}": i for i in range(150)}  # 3.4 million partial matches
        started = time.process_time()
        r = api.post("/v1/tasks", json={"task_type": "echo", "input": 1, "metadata": many})
        spent = time.process_time() - started
        assert r.status_code == 503, r.text[:300]
        assert "more than 0.2 CPU seconds" in r.text and "'adm'" in r.text
        assert spent < 5.0  # the budget, not the 3.4 million matches
