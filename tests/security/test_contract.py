"""The OpenAPI contract is accurate: schemathesis, with every check, finds nothing.

Two runs against one live server with an API key configured: one with the key (every
operation reached: bodies, answers, status codes, Allow on 405, stateful sequences), one
without (every secured operation must refuse with a documented 401, the open ones answer).
Examples per operation are bounded and the seed fixed, so a run is repeatable and short.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from helpers.services import ServerProcess
from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.api.contract import undeclared_routes
from open_autoglm.runtime import Runtime

KEY = "contract-test-key"
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "AUTOGLM_API__API_KEYS": json.dumps([KEY]),
        # A generated spec may ask for a long sleep: no task outlives a few seconds here.
        "AUTOGLM_SCHEDULER__DEFAULT_TIMEOUT_S": "5",
    }
    proc = ServerProcess(tmp_path_factory.mktemp("contract") / "data", env=env).start()
    try:
        yield proc
    finally:
        proc.stop()


def _schemathesis(server: ServerProcess, report: Path, *args: str) -> dict:
    # The document itself needs a key; read once with it, then tested with or without one.
    doc = report.with_suffix(".openapi.json")
    doc.write_bytes(
        httpx.get(server.url + "/openapi.json", headers={"X-API-Key": KEY}, timeout=30).content
    )
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
        str(doc), "--url", server.url, "--checks", "all", "--seed", "7", "--workers", "1",
        "--no-shrink", "--request-timeout", "15", "--report", "json",
        "--report-json-path", str(report), *args,
    ]  # fmt: skip
    # In the test's directory: schemathesis keeps a cache of crashes where it runs.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=report.parent)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    result: dict = json.loads(report.read_text())
    return result


def test_schemathesis_with_a_key_finds_nothing(server: ServerProcess, tmp_path: Path) -> None:
    auth = ["-H", f"Authorization: Bearer {KEY}", "-H", f"X-API-Key: {KEY}"]
    result = _schemathesis(server, tmp_path / "with-key.json", "--max-examples", "2", *auth)
    assert result["failures"] == [] and result["errors"] == []
    assert result["operations"]["tested"] == result["operations"]["total"] >= 38
    assert result["test_cases"]["generated"] > 500


def test_schemathesis_without_a_key_finds_nothing(server: ServerProcess, tmp_path: Path) -> None:
    result = _schemathesis(
        server, tmp_path / "no-key.json", "--max-examples", "2", "--phases", "fuzzing"
    )
    assert result["failures"] == [] and result["errors"] == []
    assert result["operations"]["tested"] == result["operations"]["total"]
    assert httpx.get(server.url + "/v1/tasks").status_code == 401


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(runtime=Runtime(make_settings(tmp_path / "data")))
    with TestClient(app) as client:
        yield client


def test_every_route_is_in_the_contract_and_every_ref_resolves(app: TestClient) -> None:
    assert undeclared_routes(app.app) == []  # type: ignore[arg-type]
    doc = app.get("/openapi.json").json()
    text = json.dumps(doc)
    assert "#/$defs/" not in text
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    assert refs <= set(doc["components"]["schemas"]), refs - set(doc["components"]["schemas"])
    assert set(doc["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            name = f"{method.upper()} {path}"
            for status, answer in op["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                assert schema != {"type": "string"}, f"{name} {status} is typed as a string"
            if method in ("post", "put") and not path.endswith(("/cancel", "prune-online")):
                assert "requestBody" in op, f"{name} declares no body"
            if path not in ("/healthz", "/readyz"):
                assert "401" in op["responses"], name
                assert {"bearerAuth": []} in op["security"], name
            if path not in ("/healthz", "/readyz", "/metrics"):
                assert "429" in op["responses"], name


def test_405_names_every_method_of_the_path(app: TestClient) -> None:
    resp = app.delete("/v1/tasks")
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "GET, HEAD, POST"
    assert resp.json()["error"]["code"] == "method_not_allowed"
    # A literal path wins over a template that also matches it.
    assert app.get("/v1/tasks/prune-online").status_code == 404  # no task has that id
    assert app.put("/v1/tasks/prune-online").headers["Allow"] == "POST"
