"""``autoglm workflow validate`` and ``graph``, offline."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from open_autoglm.cli.workflow import app

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "document_triage.yaml"
TYPES = ["-t", "embedding", "-t", "text-classification", "-t", "rule-inference", "-t", "echo"]


def test_validate_ok() -> None:
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE), *TYPES])
    assert result.exit_code == 0, result.output
    assert "ok: workflow 'document_triage' is valid (5 steps)" in result.output


def test_validate_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nsteps:\n"
        "  - {name: a, depends_on: [b], task: {task_type: echo}}\n"
        "  - {name: b, depends_on: [a], task: {task_type: nope, input: '${inputs.x}'}}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(bad), "-t", "echo"])
    assert result.exit_code == 1
    assert (
        "dependency cycle: a -> b -> a" in result.output
        or "dependency cycle: b -> a -> b" in result.output
    )
    assert "steps.1.task.task_type: step 'b': unknown task type 'nope'" in result.output
    assert "step 'b' references unknown input 'x'" in result.output


def test_validate_checks_inputs() -> None:
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE), "--inputs", '{"documents": "x"}'])
    assert result.exit_code == 1
    assert "input 'documents' must be a list" in result.output


def test_graph_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "dag.png"
    result = CliRunner().invoke(app, ["graph", str(EXAMPLE), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"
