"""docs/explain.md's Python example, run as written against a live server with the bundled
MiniLM registered."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.services import ServerProcess
from open_autoglm.client import Client

DOC = Path(__file__).resolve().parents[2] / "docs" / "explain.md"


@pytest.fixture(scope="module")
def explain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("explain-server") / "data").start()
    with Client(srv.url) as c:
        c.register_model(
            {"name": "minilm", "backend": "hf", "source": "bundled:all-minilm-l6-v2",
             "task_types": ["embedding"]}
        )  # fmt: skip
    yield srv
    srv.stop()


def test_python_example_runs(explain_server: ServerProcess, capsys: pytest.CaptureFixture) -> None:
    (example,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    example = example.replace("http://127.0.0.1:8000", explain_server.url)
    scope: dict[str, object] = {}
    exec(compile(example, str(DOC), "exec"), scope)
    similarity = float(capsys.readouterr().out.strip())
    assert 0.3 < similarity <= 1.0  # two sentences about a dress fitting
    assert bytes(scope["heat_map"])[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[arg-type]
