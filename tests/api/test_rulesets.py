"""Rulesets through the API: CRUD with located validation, evaluate, rule-inference by name,
and the admission policy (block, priority, reroute, tag), each decision a ``policy`` event."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from helpers.polling import wait_task
from helpers.settings import make_settings
from open_autoglm import errors
from open_autoglm.api.app import create_app
from open_autoglm.client import AsyncClient, Client
from open_autoglm.runtime import Runtime

# The example: a risky login is refused.
ACCESS = {
    "name": "access",
    "schemas": {"user_login": {"user": "str", "risk_score": "float"}},
    "rules": [
        {
            "name": "block_access",
            "salience": 10,
            "when": [{"user_login": {"user": "?u", "risk_score": {">": 0.8}}}],
            "then": [
                {"assert": {"access_blocked": {"user": "?u"}}},
                {"emit": {"event": "blocked", "user": "?u"}},
            ],
        }
    ],
}
LOGINS = [
    {"type": "user_login", "user": "mallory", "risk_score": 0.93},
    {"type": "user_login", "user": "alice", "risk_score": 0.1},
]


def _rule(
    name: str, when: list[object], then: list[object], salience: int = 0
) -> dict[str, object]:
    return {"name": name, "when": when, "then": then, "salience": salience}


@pytest.fixture
def admitted(tmp_path) -> Iterator[TestClient]:
    """A server whose admission policy is the stored ruleset ``policy``."""
    app = create_app(runtime=Runtime(make_settings(tmp_path / "data", admission_ruleset="policy")))
    with TestClient(app) as client:
        yield client


class _Through(httpx.BaseTransport):
    """Hand the SDK's requests to the TestClient's in-process app (no network, no mock)."""

    def __init__(self, api: TestClient) -> None:
        self.api = api

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.api._transport.handle_request(request)
        resp.read()
        return httpx.Response(resp.status_code, headers=resp.headers, content=resp.content)


def _events(api: TestClient, task_id: str, kind: str) -> list[dict[str, object]]:
    events = api.get(f"/v1/tasks/{task_id}/events").json()["events"]
    return [e["data"] for e in events if e["kind"] == kind]


# -- CRUD and validation ---------------------------------------------------------------------


def test_put_get_list_delete_with_versions(api):
    first = api.put("/v1/rulesets/access", json=ACCESS)
    assert first.status_code == 201 and first.json()["version"] == 1
    changed = {**ACCESS, "description": "v2"}
    second = api.put("/v1/rulesets/access", json=changed)
    assert second.status_code == 200 and second.json()["version"] == 2
    got = api.get("/v1/rulesets/access").json()
    assert got["version"] == 2 and got["source"]["description"] == "v2"
    assert got["source"]["rules"][0]["name"] == "block_access"
    assert got["created_at"] <= got["updated_at"]
    api.put("/v1/rulesets/other", json={"rules": ACCESS["rules"]})
    listed = api.get("/v1/rulesets").json()["rulesets"]
    assert [(r["name"], r["version"]) for r in listed] == [("access", 2), ("other", 1)]
    assert "source" not in listed[0]
    assert api.delete("/v1/rulesets/access").status_code == 204
    assert api.get("/v1/rulesets/access").status_code == 404
    assert api.delete("/v1/rulesets/access").json()["error"]["code"] == "not_found"
    # A new ruleset under a deleted name starts over at version 1.
    assert api.put("/v1/rulesets/access", json=ACCESS).json()["version"] == 1


def test_invalid_ruleset_lists_every_problem_with_its_location(api):
    bad = {
        "schemas": {"order": {"total": "float"}},
        "rules": [
            _rule("r1", [{"order": {"total": {"~": 5}}}], [{"explode": {}}]),
            _rule("r1", [{"order": {"totl": 3}}, {"test": "?x > 1"}], []),
        ],
    }
    resp = api.put("/v1/rulesets/bad", json=bad)
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "validation_error"
    by_loc = {tuple(d["loc"]): d["msg"] for d in err["details"]}
    assert "unknown operator '~'" in by_loc[("rules", 0, "when", 0, "order", "total")]
    assert "unknown action 'explode'" in by_loc[("rules", 0, "then", 0, "explode")]
    assert "duplicate rule name" in by_loc[("rules", 1, "name")]
    assert "unknown field 'totl'" in by_loc[("rules", 1, "when", 0, "order", "totl")]
    assert "unbound variable ?x" in by_loc[("rules", 1, "when", 1)]
    assert len(err["details"]) == 5
    assert api.get("/v1/rulesets/bad").status_code == 404  # nothing stored
    structural = api.put("/v1/rulesets/bad", json={"rules": [], "colour": 1}).json()["error"]
    assert {tuple(d["loc"]) for d in structural["details"]} == {("rules",), ("colour",)}
    assert api.put("/v1/rulesets/bad", json=[1]).status_code == 422
    assert api.put("/v1/rulesets/bad%20name", json=ACCESS).status_code == 422


# -- evaluate and rule-inference -------------------------------------------------------------


def test_evaluate_the_risky_login_example(api):
    api.put("/v1/rulesets/access", json=ACCESS)
    resp = api.post("/v1/rulesets/access/evaluate", json={"facts": LOGINS})
    assert resp.status_code == 200
    out = resp.json()
    assert out["version"] == 1 and out["fired"] == 1
    (firing,) = out["firings"]
    assert firing["rule"] == "block_access" and firing["bindings"]["u"] == "mallory"
    assert out["emitted"] == [{"rule": "block_access", "event": "blocked", "user": "mallory"}]
    blocked = [f["fields"] for f in out["facts"] if f["type"] == "access_blocked"]
    assert blocked == [{"user": "mallory"}]


def test_evaluate_errors(api):
    loop = {
        "rules": [
            _rule("again", [{"tick": {"n": "?n"}, "bind": "?t"}], [{"modify": "?t", "set": {"n": {"expr": "?n + 1"}}}])
        ]
    }  # fmt: skip
    api.put("/v1/rulesets/loop", json=loop)
    resp = api.post(
        "/v1/rulesets/loop/evaluate", json={"facts": [{"type": "tick", "n": 0}], "max_firings": 50}
    )
    assert resp.status_code == 422 and "50 rule firings" in resp.json()["error"]["message"]
    untyped = api.post("/v1/rulesets/loop/evaluate", json={"facts": [{"n": 1}]}).json()["error"]
    assert untyped["details"][0]["loc"] == ["facts"]
    assert api.post("/v1/rulesets/nope/evaluate", json={"facts": []}).status_code == 404
    bad_strategy = api.post("/v1/rulesets/loop/evaluate", json={"strategy": "random"})
    assert bad_strategy.json()["error"]["details"][0]["loc"] == ["strategy"]


def test_replacing_a_ruleset_is_seen_at_once(api):
    """The compiled cache is invalidated by PUT and DELETE (its TTL is far longer)."""
    api.put("/v1/rulesets/access", json=ACCESS)
    assert api.post("/v1/rulesets/access/evaluate", json={"facts": LOGINS}).json()["fired"] == 1
    lenient = {"rules": [_rule("allow_all", [{"user_login": {"user": "?u"}}], [])]}
    api.put("/v1/rulesets/access", json=lenient)
    out = api.post("/v1/rulesets/access/evaluate", json={"facts": LOGINS}).json()
    assert out["version"] == 2 and {f["rule"] for f in out["firings"]} == {"allow_all"}
    api.delete("/v1/rulesets/access")
    assert api.post("/v1/rulesets/access/evaluate", json={"facts": LOGINS}).status_code == 404


def test_rule_inference_task_with_a_stored_ruleset(api):
    api.put("/v1/rulesets/access", json=ACCESS)
    spec = {"task_type": "rule-inference", "input": LOGINS, "params": {"ruleset": "access"}}
    resp = api.post("/v1/infer", json=spec)
    assert resp.status_code == 200, resp.text
    result = resp.json()["result"]
    assert [f["rule"] for f in result["firings"]] == ["block_access"]
    assert result["emitted"][0]["user"] == "mallory"
    missing = api.post("/v1/infer", json={**spec, "params": {"ruleset": "gone"}})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_sdk_ruleset_methods(api):
    with Client("http://testserver", transport=_Through(api)) as client:
        assert client.put_ruleset("access", ACCESS)["version"] == 1
        assert client.get_ruleset("access")["source"]["name"] == "access"
        assert [r["name"] for r in client.list_rulesets()] == ["access"]
        out = client.evaluate_ruleset("access", LOGINS, strategy="breadth")
        assert out["firings"][0]["bindings"] == {"u": "mallory"}
        with pytest.raises(errors.ValidationError) as info:
            client.put_ruleset("bad", {"rules": [_rule("r", [{"x": {}}], ["jump"])]})
        assert info.value.details[0]["loc"] == ["rules", 0, "then", 0]
        client.delete_ruleset("access")
        with pytest.raises(errors.NotFoundError):
            client.get_ruleset("access")

    async def run_async() -> None:
        transport = httpx.ASGITransport(app=api.app)
        async with AsyncClient("http://testserver", transport=transport) as aclient:
            assert (await aclient.put_ruleset("access", ACCESS))["version"] == 1
            out = await aclient.evaluate_ruleset("access", LOGINS)
            assert out["emitted"][0]["user"] == "mallory"
            assert [r["version"] for r in await aclient.list_rulesets()] == [1]
            await aclient.delete_ruleset("access")
            with pytest.raises(errors.NotFoundError):
                await aclient.get_ruleset("access")

    asyncio.run(run_async())


# -- admission policy ------------------------------------------------------------------------

POLICY = {
    "name": "policy",
    "rules": [
        _rule(
            "guests_cannot_sleep",
            [{"task": {"task_type": "sleep"}}, {"metadata": {"key": "team", "value": "guest"}}],
            [{"block": {"reason": "guests may not run sleep"}}],
            salience=100,
        ),
        _rule(
            "vip_first",
            [{"metadata": {"key": "team", "value": "vip"}}, {"task": {"priority": {"<": 9}}}],
            [{"set_priority": {"priority": 9}}],
        ),
        _rule("small_to_large", [{"task": {"model": "m-small"}}], [{"reroute": {"model": "m-large"}}]),
        _rule(
            "audit_echo",
            [{"task": {"task_type": "echo"}}, {"client": {"kind": "ip"}}],
            [{"tag": {"tag": "audited"}}],
        ),
    ],
}  # fmt: skip


def test_missing_admission_ruleset_fails_closed(admitted, caplog):
    resp = admitted.post("/v1/tasks", json={"task_type": "echo", "input": 1})
    assert resp.status_code == 503
    assert "'policy'" in resp.json()["error"]["message"]
    assert any("policy" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    assert admitted.get("/v1/tasks").json()["tasks"] == []
    admitted.put("/v1/rulesets/policy", json=POLICY)
    assert admitted.post("/v1/tasks", json={"task_type": "echo", "input": 1}).status_code == 202
    admitted.delete("/v1/rulesets/policy")
    assert admitted.post("/v1/tasks", json={"task_type": "echo", "input": 1}).status_code == 503


def test_admission_blocks_naming_the_rule_and_stores_nothing(admitted):
    admitted.put("/v1/rulesets/policy", json=POLICY)
    spec = {"task_type": "sleep", "params": {"seconds": 0}, "metadata": {"team": "guest"}}
    resp = admitted.post("/v1/tasks", json=spec)
    assert resp.status_code == 403
    err = resp.json()["error"]
    assert err["code"] == "blocked" and err["rule"] == "guests_cannot_sleep"
    assert "guests_cannot_sleep" in err["message"] and "guests may not run sleep" in err["message"]
    assert admitted.get("/v1/tasks").json()["tasks"] == []
    # The same task from another team is admitted.
    ok = admitted.post("/v1/tasks", json={**spec, "metadata": {"team": "core"}})
    assert ok.status_code == 202


def test_a_blocked_spec_in_a_batch_rejects_the_batch(admitted):
    admitted.put("/v1/rulesets/policy", json=POLICY)
    ok = {"task_type": "sleep", "params": {"seconds": 0}, "metadata": {"team": "core"}}
    guest = {**ok, "metadata": {"team": "guest"}}
    resp = admitted.post("/v1/tasks/batch", json={"tasks": [ok, ok, guest]})
    assert resp.status_code == 403
    err = resp.json()["error"]
    assert err["rule"] == "guests_cannot_sleep" and err["message"].startswith("tasks[2]:")
    assert err["details"][0]["loc"] == ["tasks", 2]
    assert admitted.get("/v1/tasks").json()["tasks"] == []  # not even the admitted two
    assert admitted.post("/v1/tasks/batch", json={"tasks": [ok, ok]}).status_code == 202


def test_admission_raises_priority(admitted):
    admitted.put("/v1/rulesets/policy", json=POLICY)
    spec = {"task_type": "sleep", "params": {"seconds": 0}, "metadata": {"team": "vip"}}
    task = admitted.post("/v1/tasks", json=spec).json()
    assert task["priority"] == 9 and task["spec"]["priority"] == 9
    (event,) = _events(admitted, task["id"], "policy")
    assert event["fired"] == ["vip_first"] and event["priority"] == {"from": 5, "to": 9}
    assert event["ruleset"] == "policy" and event["version"] == 1 and event["blocked"] is False


def test_admission_reroutes_the_model(admitted):
    admitted.put("/v1/rulesets/policy", json=POLICY)
    spec = {"task_type": "sleep", "model": "m-small", "params": {"seconds": 0}}
    task = admitted.post("/v1/tasks", json=spec).json()
    assert task["model"] == "m-large"
    done = wait_task(admitted, task["id"], timeout=10, interval=0.02)
    assert done["status"] == "succeeded" and done["model"] == "m-large"
    (event,) = _events(admitted, task["id"], "policy")
    assert event["fired"] == ["small_to_large"]
    assert event["model"] == {"from": "m-small", "to": "m-large"}


def test_admission_tags_and_keeps_existing_tags(admitted):
    admitted.put("/v1/rulesets/policy", json=POLICY)
    spec = {"task_type": "echo", "input": 7, "metadata": {"tags": ["mine"]}}
    task = admitted.post("/v1/tasks", json=spec).json()
    assert task["spec"]["metadata"]["tags"] == ["mine", "audited"]
    assert wait_task(admitted, task["id"], timeout=10, interval=0.02)["result"] == 7
    (event,) = _events(admitted, task["id"], "policy")
    assert event["fired"] == ["audit_echo"] and event["tags"] == ["audited"]
    # Nothing fires: the decision is still recorded, with no changes.
    plain = admitted.post("/v1/tasks", json={"task_type": "sleep", "params": {"seconds": 0}})
    (quiet,) = _events(admitted, plain.json()["id"], "policy")
    assert quiet["fired"] == [] and "priority" not in quiet and "model" not in quiet


def test_admission_sees_the_clients_submit_rate(admitted):
    limit = {
        "rules": [
            _rule(
                "too_fast",
                [{"rate": {"name": "per_minute", "value": {">": 3}}}, {"client": {"id": "?c"}}],
                [{"block": {"reason": "{?c} submits too fast"}}],
            )
        ]
    }
    admitted.put("/v1/rulesets/policy", json=limit)
    codes = [
        admitted.post("/v1/tasks", json={"task_type": "echo", "input": i}).status_code
        for i in range(5)
    ]
    assert codes == [202, 202, 202, 403, 403]
    err = admitted.post("/v1/tasks", json={"task_type": "echo", "input": 0}).json()["error"]
    assert err["rule"] == "too_fast" and "submits too fast" in err["message"]


def test_docs_example_is_a_valid_ruleset(api):
    page = (Path(__file__).parents[2] / "docs" / "rules.md").read_text()
    example = yaml.safe_load(page.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert api.put("/v1/rulesets/access", json=example).status_code == 201
    facts = [*LOGINS, {"type": "session", "user": "mallory", "trusted": True}]
    out = api.post("/v1/rulesets/access/evaluate", json={"facts": LOGINS}).json()
    assert out["emitted"] == [{"rule": "block_access", "event": "blocked", "user": "mallory"}]
    trusted = api.post("/v1/rulesets/access/evaluate", json={"facts": facts}).json()
    assert trusted["fired"] == 0  # the `not` condition: a trusted session lets mallory in
