"""Attacks between clients of one server: each must fail.

Key B must not read, list, cancel or download what key A owns (a foreign id answers 404,
exactly like an id that does not exist); a key without a scope is refused; a revoked key is
refused; the database holds a hash of each key, never the key.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers.graphs import community_graph
from helpers.paths import PLUGIN_DIR
from helpers.polling import wait_task
from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.runtime import Runtime

ROOT = "static-root-key-for-tests"


class Keys:
    """One server with the static admin key and managed keys for alice and bob."""

    def __init__(self, client: TestClient, data_dir: Path) -> None:
        self.client = client
        self.data_dir = data_dir
        self.created: dict[str, dict[str, Any]] = {}
        self.a = self.create("alice", ["read", "submit"])
        self.b = self.create("bob", ["read", "submit"])
        self.a_read = self.create("alice", ["read"])
        self.a_admin = self.create("alice-ops", ["admin"])

    def create(self, owner: str, scopes: list[str]) -> str:
        r = self.client.post(
            "/v1/keys", json={"owner": owner, "scopes": scopes}, headers=auth(ROOT)
        )
        assert r.status_code == 201, r.text
        assert r.headers["cache-control"] == "no-store"  # the key is in this body
        record = r.json()
        self.created[record["key"]] = record
        return str(record["key"])

    def as_(self, key: str, method: str, path: str, **kw: Any) -> Any:
        headers = {**auth(key), **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[Keys]:
    settings = make_settings(
        tmp_path / "data", plugins={"dirs": [PLUGIN_DIR]}, api={"api_keys": [ROOT]}
    )
    with TestClient(create_app(runtime=Runtime(settings))) as client:
        yield Keys(client, tmp_path / "data")


def _submit(keys: Keys, key: str, spec: dict[str, Any]) -> dict[str, Any]:
    r = keys.as_(key, "POST", "/v1/tasks", json=spec)
    assert r.status_code == 202, r.text
    return dict(r.json())


def test_key_b_cannot_read_list_cancel_or_follow_key_a_task(keys: Keys) -> None:
    secret = {"task_type": "echo", "input": {"card": "4111-1111"}}
    done = _submit(keys, keys.a, secret)
    assert wait_task(keys.client, done["id"], headers=auth(keys.a))["result"] == {
        "card": "4111-1111"
    }
    running = _submit(keys, keys.a, {"task_type": "sleep", "params": {"seconds": 30}})

    missing = keys.as_(keys.b, "GET", "/v1/tasks/" + "0" * 32)
    assert missing.status_code == 404
    for task_id in (done["id"], running["id"]):
        for method, path in (
            ("GET", f"/v1/tasks/{task_id}"),
            ("GET", f"/v1/tasks/{task_id}/events"),
            ("POST", f"/v1/tasks/{task_id}/cancel"),
        ):
            r = keys.as_(keys.b, method, path)
            # Exactly what an unknown id answers: a foreign id cannot be probed.
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["code"] == "not_found"
            assert "4111" not in r.text
    listed = keys.as_(keys.b, "GET", "/v1/tasks").json()["tasks"]
    assert listed == []
    # A's own keys see A's work; the admin key sees everyone's.
    mine = {t["id"] for t in keys.as_(keys.a_read, "GET", "/v1/tasks").json()["tasks"]}
    assert mine == {done["id"], running["id"]}
    assert keys.as_(keys.a, "GET", f"/v1/tasks/{running['id']}").json()["status"] != "cancelled"
    seen = {t["id"] for t in keys.as_(ROOT, "GET", "/v1/tasks").json()["tasks"]}
    assert seen >= {done["id"], running["id"]}
    r = keys.as_(keys.a, "POST", f"/v1/tasks/{running['id']}/cancel")
    assert r.status_code == 200 and r.json()["owner"] == "alice"


def test_idempotency_key_of_another_owner_is_a_conflict_not_their_task(keys: Keys) -> None:
    spec = {"task_type": "echo", "input": "alice's", "idempotency_key": "order-1"}
    first = _submit(keys, keys.a, spec)
    again = keys.as_(keys.a, "POST", "/v1/tasks", json=spec)
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    stolen = keys.as_(keys.b, "POST", "/v1/tasks", json={**spec, "input": "x"})
    assert stolen.status_code == 409, stolen.text
    assert first["id"] not in stolen.text and "alice's" not in stolen.text


def test_key_b_cannot_see_key_a_artifacts(keys: Keys) -> None:
    body = b"alice's private weights"
    up = keys.as_(
        keys.a,
        "POST",
        "/v1/artifacts?name=w.bin",
        content=body,
        headers={"content-type": "application/octet-stream"},
    )
    assert up.status_code == 201, up.text
    art = up.json()["id"]
    probe = _submit(keys, keys.a, {"task_type": "probe"})
    assert wait_task(keys.client, probe["id"], headers=auth(keys.a))["status"] == "succeeded"
    mine = {x["id"]: x for x in keys.as_(keys.a, "GET", "/v1/artifacts").json()["artifacts"]}
    recorded = [x["id"] for x in mine.values() if x["task_id"] == probe["id"]]
    assert art in mine and len(recorded) == 1

    assert keys.as_(keys.b, "GET", "/v1/artifacts").json()["artifacts"] == []
    for artifact_id in (art, recorded[0]):
        for path in (f"/v1/artifacts/{artifact_id}", f"/v1/artifacts/{artifact_id}/content"):
            r = keys.as_(keys.b, "GET", path)
            assert r.status_code == 404, (path, r.text)
            assert b"private" not in r.content and b"probe" not in r.content
    # The same bytes uploaded by B are B's too, without showing B what else A has.
    keys.as_(
        keys.b,
        "POST",
        "/v1/artifacts",
        content=body,
        headers={"content-type": "application/octet-stream"},
    )
    assert [x["id"] for x in keys.as_(keys.b, "GET", "/v1/artifacts").json()["artifacts"]] == [art]
    assert keys.as_(keys.b, "GET", f"/v1/artifacts/{recorded[0]}").status_code == 404


def test_key_b_cannot_feed_key_a_artifact_to_a_task(keys: Keys) -> None:
    """A task reads its input as its owner: naming another owner's artifact is a 404 at
    submit, the same answer as an id that does not exist, so its bytes never reach B's task."""
    up = keys.as_(
        keys.a,
        "POST",
        "/v1/artifacts?name=graph.json",
        content=b'{"nodes": [1, 2], "edges": [[1, 2]], "labels": [0, 1]}',
        headers={"content-type": "application/json"},
    )
    assert up.status_code == 201, up.text
    spec = {"task_type": "graph-train", "input": {"artifact": up.json()["id"]}}
    refused = keys.as_(keys.b, "POST", "/v1/tasks", json=spec)
    assert refused.status_code == 404, refused.text
    assert refused.json()["error"]["details"][0]["loc"] == ["input", "artifact"]
    missing = keys.as_(keys.b, "POST", "/v1/tasks", json={**spec, "input": {"artifact": "0" * 64}})
    assert missing.status_code == 404
    assert refused.json()["error"]["message"].replace(up.json()["id"], "X") == missing.json()[
        "error"
    ]["message"].replace("0" * 64, "X")
    # its owner and an admin may use it
    assert keys.as_(keys.a, "POST", "/v1/tasks", json=spec).status_code == 202
    assert keys.as_(keys.a_admin, "POST", "/v1/tasks", json=spec).status_code == 202


def test_a_model_key_a_trained_is_key_a_own(keys: Keys) -> None:
    """A training task registers its model for its owner: key B neither lists, reads nor
    uses it (404, as for a name nobody registered), while A and an admin do; a model an
    admin registers stays shared."""
    graph = community_graph(n_per_class=6, classes=2, dim=4, seed=1)
    spec = {"task_type": "graph-train", "input": graph,
            "params": {"kind": "sage", "hidden": 8, "epochs": 2, "name": "alices"}}  # fmt: skip
    task = wait_task(keys.client, _submit(keys, keys.a, spec)["id"], headers=auth(keys.a))
    assert task["status"] == "succeeded", task["error"]
    assert task["result"]["registered"] == "alices"

    use = {
        "task_type": "graph-predict",
        "model": "alices",
        "params": {"node_ids": graph["nodes"][:1]},
    }

    def names(key: str, path: str = "/v1/models/registry") -> set[str]:
        body = keys.as_(key, "GET", path).json()
        return (
            {m["name"] for m in body["models"]}
            if "models" in body
            else {m["id"] for m in body["data"]}
        )

    assert keys.as_(keys.a, "POST", "/v1/infer", json=use).status_code == 200
    for path in ("/v1/models/registry", "/v1/models"):
        assert "alices" in names(keys.a, path) and "alices" in names(keys.a_admin, path)
        assert "alices" not in names(keys.b, path)

    assert keys.as_(keys.a, "GET", "/v1/models/registry/alices").json()["private_to"] == "alice"
    for path in ("/v1/models/registry/alices", "/v1/models/alices"):
        assert keys.as_(keys.b, "GET", path).status_code == 404
        assert keys.as_(keys.b, "GET", path.replace("alices", "nobodys")).status_code == 404
    refused = keys.as_(keys.b, "POST", "/v1/infer", json=use)
    assert refused.status_code == 404 and refused.json()["error"]["details"][0]["loc"] == ["model"]
    assert keys.as_(keys.b, "POST", "/v1/tasks", json=use).status_code == 404
    assert keys.as_(keys.a_admin, "POST", "/v1/infer", json=use).status_code == 200

    shared = {"name": "shared", "source": "bundled:all-minilm-l6-v2", "task_types": ["embedding"]}
    assert keys.as_(ROOT, "POST", "/v1/models/registry", json=shared).status_code == 201
    assert "shared" in names(keys.b)
    assert keys.as_(ROOT, "GET", "/v1/models/registry/shared").json()["private_to"] is None


def test_key_b_cannot_read_list_or_cancel_key_a_workflow_run(keys: Keys) -> None:
    spec = {
        "name": "private_flow",
        "steps": [{"name": "nap", "task": {"task_type": "sleep", "params": {"seconds": 30}}}],
    }
    r = keys.as_(keys.a, "POST", "/v1/workflows", json={"spec": spec})
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    for method, path in (
        ("GET", f"/v1/workflows/runs/{run_id}"),
        ("GET", f"/v1/workflows/runs/{run_id}/events"),
        ("GET", f"/v1/workflows/runs/{run_id}/callbacks"),
        ("POST", f"/v1/workflows/runs/{run_id}/cancel"),
    ):
        r = keys.as_(keys.b, method, path)
        assert r.status_code == 404, (method, path, r.text)
    assert keys.as_(keys.b, "GET", "/v1/workflows/runs").json()["runs"] == []
    listed = keys.as_(keys.a, "GET", "/v1/workflows/runs").json()["runs"]
    assert [x["id"] for x in listed] == [run_id]
    # The run's step task is A's too: A sees it, B does not.
    for _ in range(600):
        steps = keys.as_(keys.a, "GET", f"/v1/workflows/runs/{run_id}").json()["steps"]
        task_id = steps[0]["task_id"]
        if task_id:
            break
        time.sleep(0.05)
    assert keys.as_(keys.a, "GET", f"/v1/tasks/{task_id}").json()["owner"] == "alice"
    assert keys.as_(keys.b, "GET", f"/v1/tasks/{task_id}").status_code == 404
    assert keys.as_(keys.a, "POST", f"/v1/workflows/runs/{run_id}/cancel").status_code == 200


def test_scopes_are_enforced(keys: Keys) -> None:
    spec = {"task_type": "echo", "input": 1}
    refused = keys.as_(keys.a_read, "POST", "/v1/tasks", json=spec)
    assert refused.status_code == 403 and "'submit'" in refused.json()["error"]["message"]
    assert keys.as_(keys.a_read, "POST", "/v1/infer", json=spec).status_code == 403
    assert keys.as_(keys.a_read, "GET", "/v1/tasks").status_code == 200
    # Changing the platform needs admin: models, rulesets (the admission policy), keys.
    model = {"name": "m", "source": "bundled:all-minilm-l6-v2", "task_types": ["embedding"]}
    ruleset = {
        "rules": [
            {"name": "r", "when": [{"login": {"user": "?u"}}], "then": [{"emit": {"u": "?u"}}]}
        ]
    }
    for method, path, body in (
        ("POST", "/v1/models/registry", model),
        ("DELETE", "/v1/models/registry/m", None),
        ("PUT", "/v1/rulesets/admission", ruleset),
        ("DELETE", "/v1/rulesets/admission", None),
        ("POST", "/v1/keys", {"owner": "mallory", "scopes": ["admin"]}),
        ("GET", "/v1/keys", None),
        ("POST", "/v1/tasks/prune-online?older_than_s=0", None),
    ):
        r = keys.as_(keys.a, method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    r = keys.as_(keys.a_admin, "PUT", "/v1/rulesets/admission", json=ruleset)
    assert r.status_code == 201, r.text
    r = keys.as_(keys.a_admin, "POST", "/v1/models/registry", json=model)
    assert r.status_code == 201, r.text
    runtime = keys.client.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.storage.get_model("m")["principal"] == "alice-ops"
    # A client key may not take the static keys' owner (it would see their work).
    r = keys.as_(keys.a_admin, "POST", "/v1/keys", json={"owner": "admin", "scopes": ["read"]})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["owner"]
    r = keys.as_(keys.a_admin, "POST", "/v1/keys", json={"owner": "x", "scopes": ["root"]})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"][0] == "scopes"
    listed = keys.as_(keys.a_admin, "GET", "/v1/keys").json()["keys"]
    assert {k["owner"] for k in listed} == {"alice", "bob", "alice-ops"}
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    assert keys.as_(keys.a, "GET", "/v1/models/registry").status_code == 200


def test_missing_wrong_and_revoked_keys_are_refused(keys: Keys) -> None:
    assert keys.client.get("/v1/tasks").status_code == 401
    assert keys.as_("agk_0123456789abcdef_guess", "GET", "/v1/tasks").status_code == 401
    forged = keys.a[:-4] + ("AAAA" if not keys.a.endswith("AAAA") else "BBBB")
    assert keys.as_(forged, "GET", "/v1/tasks").status_code == 401
    assert keys.client.get("/healthz").status_code == 200
    key_id = keys.created[keys.b]["id"]
    assert keys.as_(keys.b, "GET", "/v1/tasks").status_code == 200
    revoked = keys.as_(ROOT, "POST", f"/v1/keys/{key_id}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    r = keys.as_(keys.b, "GET", "/v1/tasks")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert keys.as_(ROOT, "POST", "/v1/keys/ffffffffffffffff/revoke").status_code == 404
    listed = keys.as_(ROOT, "GET", "/v1/keys?include_revoked=true").json()["keys"]
    assert any(k["id"] == key_id and k["revoked_at"] for k in listed)


def test_the_database_holds_hashes_not_keys(keys: Keys) -> None:
    # The database and its write-ahead log: wherever the rows are now.
    raw = b"".join(p.read_bytes() for p in keys.data_dir.glob("autoglm.db*"))
    for key in keys.created:
        secret = key.split("_", 2)[2]
        assert key.encode() not in raw and secret.encode() not in raw
        assert hashlib.sha256(key.encode()).hexdigest().encode() in raw


def test_no_keys_configured_stays_open(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", plugins={"dirs": [PLUGIN_DIR]})
    with TestClient(create_app(runtime=Runtime(settings))) as client:
        task = client.post("/v1/tasks", json={"task_type": "echo", "input": 1}).json()
        assert client.get(f"/v1/tasks/{task['id']}").status_code == 200
        assert [t["id"] for t in client.get("/v1/tasks").json()["tasks"]] == [task["id"]]
        assert task["owner"] is None
        # The first managed key turns authentication on.
        created = client.post("/v1/keys", json={"owner": "ops", "scopes": ["admin"]})
        assert created.status_code == 201
        assert client.get("/v1/tasks").status_code == 401
        admin = auth(created.json()["key"])
        assert client.get(f"/v1/tasks/{task['id']}", headers=admin).status_code == 200
        # Revoking the last key does not open the API again.
        key_id = created.json()["id"]
        assert client.post(f"/v1/keys/{key_id}/revoke", headers=admin).status_code == 200
        assert client.get("/v1/tasks").status_code == 401
