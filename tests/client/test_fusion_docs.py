"""docs/fusion.md's worked example, run as written against a live server (a real process),
on a small sample and a tiny text model; then the CLI's predict and validate verbs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.services import ServerProcess
from helpers.tables import REVIEW_SCHEMA, REVIEWS
from open_autoglm.cli.fusion import app

DOC = Path(__file__).resolve().parents[2] / "docs" / "fusion.md"


@pytest.fixture(scope="module")
def fusion_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

    root = tmp_path_factory.mktemp("fusion-server")
    env = {
        "AUTOGLM_MODEL_CACHE": str(root / "model-cache"),
    }
    srv = ServerProcess(root / "data", env=env).start()
    srv.tiny_model = str(build_tiny_bert_embedder(root / "tiny"))  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_worked_example_runs(
    fusion_server: ServerProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    (example,) = python_blocks(DOC.read_text(encoding="utf-8"))
    monkeypatch.setenv("AUTOGLM_URL", fusion_server.url)
    monkeypatch.setenv("FUSION_ROWS", "240")
    monkeypatch.setenv("FUSION_TEXT_MODEL", fusion_server.tiny_model)  # type: ignore[attr-defined]
    monkeypatch.setenv("FUSION_DATA", str(REVIEWS))
    example = example.replace("epochs=10", "epochs=3")
    exec(compile(example, str(DOC), "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:5]] == ["early", "hybrid", "late", "tabular", "text"]
    assert all(0.0 <= float(line.split()[1]) <= 1.0 for line in lines[:5])
    assert [line.split()[0] for line in lines[5:]] == ["0", "1", "2"]

    rows = Path(fusion_server.data_dir) / "rows.jsonl"
    rows.write_text(
        '{"Title": "Love it", "Review Text": "Fits well", "Age": 40, "Class Name": "Dresses",'
        ' "Division Name": "General", "Department Name": "Dresses",'
        ' "Positive Feedback Count": 0}\n'
        '{"Title": null, "Review Text": null, "Age": 25, "Class Name": "Knits",'
        ' "Division Name": "General", "Department Name": "Tops", "Positive Feedback Count": 2}\n'
    )
    out = CliRunner().invoke(
        app, ["predict", "recommend", str(rows), "--json", "--url", fusion_server.url]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["classes"] == [0, 1] and len(result["predictions"]) == 2


def test_cli_validate_names_every_problem(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(REVIEW_SCHEMA))
    table = tmp_path / "bad.csv"
    table.write_text(
        "Title,Review Text,Division Name,Department Name,Age,Positive Feedback Count,"
        "Recommended IND\n"
        "a,b,General,Tops,thirty,1,1\n"
        ",,General,Tops,40,,1\n"
    )
    out = CliRunner().invoke(
        app, ["validate", str(table), "--schema", str(schema)], env={"COLUMNS": "200"}
    )
    assert out.exit_code == 1
    for text in (
        "4 problems",
        "input.Class Name",
        "is missing from the table",
        "input.Age",
        "non-numbers (rows 0)",
        "input.Positive Feedback Count",
        "missing numbers (rows 1)",
        "at least two classes",
    ):
        assert text in out.output, text
