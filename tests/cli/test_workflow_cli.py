"""``autoglm workflow validate`` and ``graph``, offline."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from open_autoglm.cli.workflow import app

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "document_triage.yaml"


def test_validate_ok() -> None:
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "ok: workflow 'document_triage' is valid (5 steps)" in result.output


def test_validate_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nsteps:\n"
        "  - {name: a, depends_on: [b], task: {task_type: echo}}\n"
        "  - {name: b, depends_on: [a], task: {task_type: nope, input: '${inputs.x}'}}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(bad)])
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


def test_run_watch_and_status_against_a_server(server) -> None:  # type: ignore[no-untyped-def]
    import json

    example = EXAMPLE.parent / "order_screening.yaml"
    env = {"AUTOGLM_URL": server.url, "AUTOGLM_API_KEY": "sekret", "COLUMNS": "200"}
    inputs = '{"orders": [{"id": "a", "amount": 5000, "country": "de"}], "review_s": 0.05}'
    result = CliRunner().invoke(
        app, ["run", str(example), "--inputs", inputs, "--watch", "--poll", "0.05"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "order_screening" in result.output
    for line in ("normalize", "normalize[0] succeeded", "hold_for_review succeeded"):
        assert line in result.output, result.output
    run_id = result.output.split("order_screening ", 1)[1].split()[0]

    status = CliRunner().invoke(app, ["status", run_id, "--json"], env=env)
    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    assert data["status"] == "succeeded"
    assert [s["status"] for s in data["steps"]] == ["succeeded"] * 4

    tree = CliRunner().invoke(app, ["status", run_id], env=env)
    assert tree.exit_code == 0 and "report succeeded" in tree.output

    failed = CliRunner().invoke(
        app, ["run", str(example), "--inputs", '{"orders": 1}', "--watch"], env=env
    )
    assert failed.exit_code == 1 and "must be a list" in failed.output
    missing = CliRunner().invoke(app, ["status", "nope"], env=env)
    assert missing.exit_code == 1 and "not found" in missing.output


def test_validate_runs_the_servers_task_checks(tmp_path: Path) -> None:
    # A field the task type does not take is refused offline exactly as the server refuses it.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nsteps:\n"
        "  - {name: c, task: {task_type: text-classification, model: m, input: x,"
        " params: {colour: red}}}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "colour" in result.output
