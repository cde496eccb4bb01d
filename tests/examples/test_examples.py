"""Every file under examples/ runs as shipped against one live server.

The model entry is registered with the CLI, each workflow runs with the exact command its
header comment gives, and the demo takes its tour over HTTP. A new file under examples/ that
no test here runs fails :func:`test_every_example_file_is_run`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.paths import EXAMPLES, REPO
from helpers.services import ServerProcess
from open_autoglm.client import Client

WORKFLOWS = sorted((EXAMPLES / "workflows").glob("*.yaml"))
MODEL_ENTRY = EXAMPLES / "models" / "minilm.json"
DEMO = EXAMPLES / "demo.py"


def run_command(yaml_file: Path) -> str:
    """The ``autoglm workflow run`` command in the file's header comment, as written."""
    header = []
    for line in yaml_file.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    start = next(i for i, line in enumerate(header) if line.startswith("autoglm workflow run"))
    end = next(i for i in range(start, len(header)) if "--watch" in header[i])
    return "\n".join(header[start : end + 1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("examples")).start()
    try:
        sh(srv, f"autoglm models register {MODEL_ENTRY.relative_to(REPO)}")
        yield srv
    finally:
        srv.stop()


def sh(srv: ServerProcess, command: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AUTOGLM_URL": srv.url,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def latest_run(srv: ServerProcess, name: str) -> dict[str, Any]:
    with Client(srv.url) as client:
        (run,) = client.list_runs(name=name, limit=1)
        return client.get_run(run["id"])


EXPECTED = {
    "order_screening": lambda out: out["flagged"] == 1 and out["report"]["held"] is True,
    "document_triage": lambda out: (
        out["label"] == "urgent outage"
        and out["escalation"]["emitted"][0]["event"] == "page"
        and out["summary"]["escalated"] is True
        and out["summary"]["labels"][1][0]["label"] == "billing"
    ),
    "batch_moderation": lambda out: (
        out["report"]["results"]
        == [{"label": "friendly", "blocked": False}, {"label": "insult", "blocked": True}]
    ),
}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_example_runs_as_its_header_says(server: ServerProcess, path: Path) -> None:
    sh(server, run_command(path))  # --watch exits 0 only when the run succeeded
    run = latest_run(server, path.stem)
    assert run["status"] == "succeeded", run
    assert EXPECTED[path.stem](run["outputs"]), run["outputs"]


def test_demo_tours_a_live_server(server: ServerProcess) -> None:
    out = sh(server, f"{sys.executable} {DEMO.relative_to(REPO)}").stdout
    assert "emitted: [{'rule': 'block_access'" in out
    assert "dim 384" in out
    assert "run succeeded" in out


def test_every_example_file_is_run() -> None:
    files = {p for p in EXAMPLES.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    # The explanation pictures are what tests/api/test_explain.py writes, one per family.
    pictures = set((EXAMPLES / "explain").glob("*"))
    covered = {*WORKFLOWS, MODEL_ENTRY, DEMO, *pictures}
    assert files == covered, f"not run by a test: {sorted(map(str, files - covered))}"
    assert set(EXPECTED) == {p.stem for p in WORKFLOWS}
