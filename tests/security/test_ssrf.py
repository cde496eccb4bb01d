"""Server-side request forgery: every outbound call goes through one policy that refuses
non-public addresses after resolution, at connect time and on redirects."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers.security import Listener, app_client
from open_autoglm.errors import OutboundRefusedError
from open_autoglm.resilience.outbound import REFUSED_BY_POLICY, OutboundPolicy
from open_autoglm.workflows.callbacks import deliver_callback

PUBLIC = "93.184.216.34"  # a global unicast address, never contacted by these tests


def _resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    return lambda host, port: table[host]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/",
        "http://localhost.:80/",  # resolves to loopback (below)
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",  # shared address space
        "http://224.0.0.1/",
        "http://0.0.0.0/",
        "http://240.0.0.1/",  # reserved
        "http://mixed.test/",  # one public and one private answer
        "ftp://files.test/",
        "gopher://files.test/",
        "http://user@files.test/",
    ],
)
def test_non_public_and_malformed_targets_are_refused(url: str) -> None:
    policy = OutboundPolicy(
        resolve=_resolver({"localhost.": ["127.0.0.1"], "mixed.test": [PUBLIC, "10.0.0.7"]})
    )
    with pytest.raises(OutboundRefusedError) as info:
        policy.check_url(url, loc=("callback_url",))
    assert info.value.details[0]["loc"] == ["callback_url"]


def test_the_allowlist_opens_named_hosts_and_networks() -> None:
    policy = OutboundPolicy.from_lists(
        ["llm.internal"],
        ["10.20.0.0/16"],
        resolve=_resolver({"llm.internal": ["10.9.9.9"], "gpu.test": ["10.20.1.1"]}),
    )
    policy.check_url("http://llm.internal:8080/v1", base=True)
    policy.check_url("http://gpu.test/v1")
    policy.check_url(f"https://{PUBLIC}/hook")
    with pytest.raises(OutboundRefusedError):
        policy.check_url("http://10.21.0.1/")


def test_dns_rebinding_is_refused_at_connect_time(listener: Listener) -> None:
    """The name is public when checked and loopback when connected: the connection is checked
    too, and goes to the address that was checked."""
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    policy = OutboundPolicy(resolve=lambda host, port: next(answers))
    url = f"http://rebind.test:{listener.port}/hook"
    policy.check_url(url)  # passes: public now
    with policy.client(timeout=5) as client, pytest.raises(OutboundRefusedError):
        client.post(url, content=b"{}")
    assert listener.requests == []


def test_a_redirect_to_a_refused_host_is_refused(listener: Listener) -> None:
    target = Listener()
    listener.status, listener.headers = 307, {"Location": target.url + "/admin"}
    try:
        # The first hop's name is opened by the operator; the redirect's host is not.
        policy = OutboundPolicy.from_lists(
            ["hook.test"], resolve=_resolver({"hook.test": ["127.0.0.1"]})
        )
        with (
            policy.client(timeout=5, follow_redirects=True) as client,
            pytest.raises(OutboundRefusedError),
        ):
            client.post(f"http://hook.test:{listener.port}/", content=b"{}")
        assert len(listener.requests) == 1 and target.requests == []
    finally:
        target.close()


def test_callback_delivery_is_no_port_scanner(listener: Listener) -> None:
    """An open port and a closed one leave the same record: refused, one attempt, no timing."""
    closed = Listener()
    closed.close()
    records = []
    for url in (listener.url + "/hook", closed.url + "/hook", "http://169.254.169.254/"):
        attempts = deliver_callback(url, {"x": 1}, "s", max_attempts=3, sleep=lambda s: None)
        records.append([(a.attempt, a.status, a.error, a.duration_s) for a in attempts])
    assert records == [[(1, None, REFUSED_BY_POLICY, 0.0)]] * 3
    assert listener.requests == []


def test_workflow_callback_url_is_refused_at_submit(api: TestClient, listener: Listener) -> None:
    spec = {
        "name": "probe",
        "callback_url": listener.url + "/hook",
        "steps": [{"name": "a", "task": {"task_type": "echo", "input": 1}}],
    }
    for route in ("/v1/workflows/validate", "/v1/workflows"):
        r = api.post(route, json={"spec": spec})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["loc"] == ["callback_url"]
    # A step's own callback, in a nested workflow too, is checked the same way.
    inner = {**spec, "callback_url": None}
    inner["steps"] = [{**spec["steps"][0], "callback_url": "http://169.254.169.254/"}]
    nested = {**inner, "steps": [{"name": "sub", "workflow": inner}]}
    r = api.post("/v1/workflows", json={"spec": nested})
    assert r.status_code == 422, r.text
    loc = ["steps", 0, "workflow", "steps", 0, "callback_url"]
    assert r.json()["error"]["details"][0]["loc"] == loc
    assert listener.requests == []


def test_upstream_calls_connect_through_the_policy(tmp_path: Path, listener: Listener) -> None:
    """An entry stored while loopback was open stops working once it is closed: the check at
    connect time does not trust the registration."""
    entry = {
        "name": "up",
        "backend": "openai",
        "source": {"base_url": listener.url + "/v1", "model": "m"},
        "task_types": ["embedding"],
    }
    opened = {"outbound": {"allow_networks": ["127.0.0.0/8"]}}
    with app_client(tmp_path / "data", **opened) as api:
        assert api.post("/v1/models/registry", json=entry).status_code == 201
    with app_client(tmp_path / "data") as api:
        r = api.post("/v1/embeddings", json={"model": "up", "input": "x"})
        # the OpenAI routes answer in OpenAI's error shape: a 400 with the platform's code
        assert r.status_code == 400 and r.json()["error"]["code"] == "outbound_refused"
    assert listener.requests == []
