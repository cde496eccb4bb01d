"""Attacks from a web page the user has open: each must fail.

A page can post ``text/plain`` (or form, or untyped) bodies to any server without a CORS
preflight; the routes that take JSON must refuse them. A page may not act from another
origin at all unless the CORS policy allows it. An uploaded HTML artifact must never render
in the API's origin, and every response carries the security headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from helpers.paths import PLUGIN_DIR
from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.api.browser import API_CSP, DOCS_CSP
from open_autoglm.runtime import Runtime


def _client(tmp_path: Path, **overrides: object) -> TestClient:
    settings = make_settings(tmp_path / "data", plugins={"dirs": [PLUGIN_DIR]}, **overrides)
    return TestClient(create_app(runtime=Runtime(settings)))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path) as client:
        yield client


CSRF_POSTS = [
    ("/v1/tasks", {"task_type": "echo", "input": "from a web page"}),
    (
        "/v1/models/registry",
        {"name": "evil", "source": {"base_url": "http://attacker/v1"}, "task_types": ["chat"]},
    ),
    ("/v1/embeddings", {"model": "minilm", "input": "x"}),
]


def test_csrf_post_without_json_content_type_is_refused(api: TestClient) -> None:
    for path, body in CSRF_POSTS:
        for content_type in (
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            None,
        ):
            headers = {"content-type": content_type} if content_type else {}
            r = api.post(path, content=orjson.dumps(body), headers=headers)
            assert r.status_code == 415, (path, content_type, r.text)
            err = r.json()["error"]
            assert err["code"] == "unsupported_media_type"
            assert repr(content_type or "none") in err["message"]
            assert "application/json" in err["message"]
            assert err["details"][0]["loc"] == ["header", "content-type"]
    # Nothing was done: no task stored, no model registered.
    assert api.get("/v1/tasks").json()["tasks"] == []
    assert api.get("/v1/models/registry").json()["models"] == []


def test_json_bodies_still_work_and_uploads_take_any_type(api: TestClient) -> None:
    r = api.post(
        "/v1/tasks",
        content=orjson.dumps({"task_type": "echo", "input": 1}),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 202, r.text
    # A request without a body needs no type (cancel); a form-typed one is refused.
    assert api.post(f"/v1/tasks/{r.json()['id']}/cancel").status_code in (200, 409)
    form = api.post(
        f"/v1/tasks/{r.json()['id']}/cancel",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    multipart = b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\nhello\r\n--b--\r\n'
    up = api.post(
        "/v1/artifacts?name=f.bin",
        content=multipart,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert up.status_code == 201, up.text
    # Mounted under a prefix, the upload is still the upload and the rest still JSON-only.
    routed = TestClient(api.app, root_path="/api")
    up = routed.post("/api/v1/artifacts", content=b"x", headers={"content-type": "text/plain"})
    assert up.status_code == 201, up.text
    plain = routed.post("/api/v1/tasks", content=b"{}", headers={"content-type": "text/plain"})
    assert plain.status_code == 415


def test_uploaded_html_is_served_as_an_attachment_with_nosniff(api: TestClient) -> None:
    page = b"<html><script>fetch('/v1/tasks').then(r => r.text()).then(leak)</script></html>"
    for media_type in ("text/html", "image/svg+xml", "application/xhtml+xml"):
        up = api.post(
            "/v1/artifacts?name=report.html",
            content=page + media_type.encode(),
            headers={"content-type": media_type},
        )
        assert up.status_code == 201
        r = api.get(f"/v1/artifacts/{up.json()['id']}/content")
        assert r.status_code == 200 and r.content.startswith(page)
        assert r.headers["content-disposition"].startswith("attachment;")
        assert 'filename="report.html"' in r.headers["content-disposition"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == API_CSP
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    up = api.post(
        "/v1/artifacts?name=curve.png", content=png, headers={"content-type": "image/png"}
    )
    r = api.get(f"/v1/artifacts/{up.json()['id']}/content")
    assert r.headers["content-disposition"].startswith("inline;")
    assert r.headers["x-content-type-options"] == "nosniff"


def test_every_response_carries_the_security_headers(api: TestClient) -> None:
    for r in (
        api.get("/healthz"),
        api.get("/v1/tasks"),
        api.get("/v1/tasks/" + "0" * 32),  # an error
        api.post("/v1/infer", json={"task_type": "echo", "input": 1}),  # the direct route
        api.post("/v1/tasks", content=b"{}", headers={"content-type": "text/plain"}),  # a 415
    ):
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["content-security-policy"] == API_CSP
    docs = api.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-security-policy"] == DOCS_CSP
    # The docs page's script and style come from this server, the only place its policy allows.
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text and "https://" not in DOCS_CSP


def test_cross_origin_pages_are_refused_unless_cors_allows_them(tmp_path: Path) -> None:
    spec = {"task_type": "echo", "input": 1}
    with _client(tmp_path / "off") as api:
        evil = {"origin": "https://evil.example"}
        r = api.post("/v1/tasks", json=spec, headers=evil)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_origin"
        # Not even a body-less request (a cancel) is taken from another origin.
        assert api.post("/v1/tasks/x/cancel", headers=evil).status_code == 403
        assert api.get("/v1/tasks").json()["tasks"] == []
        # CORS is off: a preflight gets no permission, a read no CORS header.
        pre = api.options(
            "/v1/tasks",
            headers={**evil, "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in pre.headers
        assert "access-control-allow-origin" not in api.get("/v1/tasks", headers=evil).headers
        # The server's own pages (the docs) may post.
        own = api.post("/v1/tasks", json=spec, headers={"origin": "http://testserver"})
        assert own.status_code == 202, own.text
    allowed = "https://app.example"
    cors = {"cors": {"allow_origins": [allowed], "allow_methods": ["GET", "POST"]}}
    with _client(tmp_path / "on", api=cors) as api:
        pre = api.options(
            "/v1/tasks",
            headers={
                "origin": allowed,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == allowed
        assert "POST" in pre.headers["access-control-allow-methods"]
        r = api.post("/v1/tasks", json=spec, headers={"origin": allowed})
        assert r.status_code == 202 and r.headers["access-control-allow-origin"] == allowed
        other = api.post("/v1/tasks", json=spec, headers={"origin": "https://evil.example"})
        assert other.status_code == 403
