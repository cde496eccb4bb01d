"""/docs and /redoc render from the server's own assets: a headless Chromium that can resolve
no host but the server's draws Swagger UI with the API's operations."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from helpers.services import ServerProcess


def test_docs_pages_name_only_local_assets(api: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = api.get(page).text
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)
        assert urls, html
        assert all(u.startswith("/") for u in urls), urls  # nothing from another host
    assert api.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert api.get("/docs-assets/redoc.standalone.js").status_code == 200
    assert api.get("/docs/oauth2-redirect").status_code == 200
    # Request bodies given as raw JSON schema keep their references resolvable.
    text = api.get("/openapi.json").text
    assert "#/$defs/" not in text and '"$defs"' not in text
    schemas = orjson.loads(text)["components"]["schemas"]
    assert "TaskSpec" in schemas or any("Task" in name for name in schemas)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("docs")).start()
    try:
        yield srv
    finally:
        srv.stop()


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: run scripts/ensure-services.sh"
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={profile}",
            # No network: every host name but the server's fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--window-size=1200,900",
            "--virtual-time-budget=20000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_swagger_ui_renders_offline(server: ServerProcess, tmp_path: Path) -> None:
    from PIL import Image

    dom = chromium(server.url + "/docs", tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'class="swagger-ui' in dom.stdout  # the bundle ran
    assert "/v1/tasks" in dom.stdout and "opblock" in dom.stdout  # the operations are drawn

    shot = tmp_path / "docs.png"
    done = chromium(server.url + "/docs", tmp_path / "profile2", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L").resize((120, 90)))  # (90, 120) grey
    dark = int((pixels < 200).sum())
    assert len(np.unique(pixels)) > 20 and dark > 0.02 * pixels.size, "the page is blank"


def test_redoc_renders_offline(server: ServerProcess, tmp_path: Path) -> None:
    dom = chromium(server.url + "/redoc", tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Submit a task" in dom.stdout  # an operation summary, drawn by the ReDoc script
