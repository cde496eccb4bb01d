"""Secret exfiltration through upstream models: a client must not make the server send a key,
a URL of its choosing, or an upstream's error body back to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from helpers.security import Listener, app_client
from open_autoglm.client.base import raise_for_error
from open_autoglm.errors import OutboundRefusedError, ValidationError
from open_autoglm.executors.upstream import UpstreamSecrets
from open_autoglm.spec.model import UpstreamSource

SECRET = "exfiltrate-me-4b1d"


def _upstream(base_url: str, **source: Any) -> dict[str, Any]:
    return {
        "name": "evil",
        "backend": "openai",
        "source": {"base_url": base_url, "model": "m", **source},
        "task_types": ["embedding"],
    }


def test_the_exfiltration_attempt_reaches_nothing(
    api: TestClient, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack as reported: a server variable as the key, a loopback URL of the client's
    choosing. Neither the key name nor the URL is accepted, and the listener hears nothing."""
    monkeypatch.setenv("AUTOGLM_API__API_KEYS", f'["{SECRET}"]')
    for source in ({"api_key_env": "AUTOGLM_API__API_KEYS"}, {"api_key": "HOME"}):
        r = api.post("/v1/models/registry", json=_upstream(listener.url + "/v1", **source))
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["loc"] == ["source", "api_key"]
        assert SECRET not in r.text
    # Without a key, the loopback URL itself is refused (the outbound policy).
    r = api.post("/v1/models/registry", json=_upstream(listener.url + "/v1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "outbound_refused"
    assert r.json()["error"]["details"][0]["loc"] == ["source", "base_url"]
    # The path stops at the base: no query or fragment to steer it, no credentials.
    for url in (
        "https://api.example.com/v1?x=",
        "https://api.example.com/v1#frag",
        "https://user:pw@api.example.com/v1",
    ):
        r = api.post("/v1/models/registry", json=_upstream(url))
        assert r.status_code == 422, (url, r.text)
        assert r.json()["error"]["details"][0]["loc"] == ["source", "base_url"], url
    assert api.get("/v1/models/registry/evil").status_code == 404
    assert listener.requests == []


def test_only_configured_keys_are_sent_and_error_bodies_stay_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator-opened upstream gets the key the operator named; when it fails, the client
    sees the status and a generic message, never the upstream's body."""
    leaky = Listener(status=500, body=b'{"error": {"message": "db password is hunter2"}}')
    try:
        with app_client(
            tmp_path / "data",
            outbound={"allow_networks": ["127.0.0.0/8"]},
            models={"upstream_secrets": {"provider": "sk-operator"}},
        ) as api:
            entry = _upstream(leaky.url + "/v1", api_key="provider")
            assert api.post("/v1/models/registry", json=entry).status_code == 201
            r = api.post("/v1/embeddings", json={"model": "evil", "input": "hi"})
            assert r.status_code == 500
            assert "hunter2" not in r.text
            assert r.json()["error"]["message"] == "upstream for model 'evil' answered 500"
    finally:
        leaky.close()
    (sent,) = leaky.requests
    assert sent["path"] == "/v1/embeddings"  # the fixed OpenAI path under the base
    assert sent["headers"]["Authorization"] == "Bearer sk-operator"
    assert "hunter2" in caplog.text  # kept for the operator


def test_secret_names_resolve_only_through_the_operator() -> None:
    environ = {"OPENAI_KEY": "sk-env", "DATABASE_PASSWORD": "pw"}
    secrets = UpstreamSecrets({"named": "sk-map"}, ["OPENAI_KEY"], environ)
    assert secrets.value("named") == "sk-map"
    assert secrets.value("OPENAI_KEY") == "sk-env"
    assert secrets.value(None) is None
    secrets.check("OPENAI_KEY")
    with pytest.raises(Exception, match="no upstream key named 'DATABASE_PASSWORD'"):
        secrets.check("DATABASE_PASSWORD")
    # Stored entries keep their older spelling: api_key_env reads as the secret's name.
    assert UpstreamSource.model_validate(
        {"base_url": "https://x.example/v1", "model": "m", "api_key_env": "OPENAI_KEY"}
    ).api_key == ("OPENAI_KEY")


def test_the_sdk_raises_the_refusal_as_a_validation_error() -> None:
    body = {"error": {"code": "outbound_refused", "message": "m", "details": []}}
    with pytest.raises(OutboundRefusedError) as info:
        raise_for_error(httpx.Response(422, json=body))
    assert isinstance(info.value, ValidationError)
