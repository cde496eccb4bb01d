"""What every command shares: one-line errors, human times, and the verbs people look for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.services import ServerProcess
from open_autoglm import errors
from open_autoglm.cli.common import fail, human_time
from open_autoglm.cli.main import app
from open_autoglm.ports import free_port


def autoglm(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOGLM_URL": url, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "open_autoglm.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("args", [["status", "abc"], ["workflow", "list"], ["models", "list"]])
def test_a_stopped_server_is_one_line_and_exit_1(args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = autoglm(*args, url=url)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: cannot reach {url}: is the server running? set AUTOGLM_URL or --url"
    ]
    assert done.stdout == ""


def test_human_time_says_when() -> None:
    now = 1_800_000_000.0
    assert human_time(None) == "-"
    assert human_time(now - 5, now=now).endswith("(5 s ago)")
    assert human_time(now - 180, now=now).endswith("(3 min ago)")
    assert human_time(now - 7200, now=now).endswith("(2 h ago)")
    assert human_time(now - 5, now=now).startswith(time.strftime("%Y-", time.localtime(now)))


def test_an_error_does_not_repeat_what_its_message_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exc = errors.ValidationError(
        "invalid task spec: n: unknown field 'n'",
        details=[{"loc": ["n"], "msg": "unknown field 'n'"}, {"loc": ["x"], "msg": "bad"}],
    )
    with pytest.raises(Exception, match="1"):  # typer.Exit(1)
        fail(exc)
    err = capsys.readouterr().err
    assert err.count("unknown field 'n'") == 1
    assert "  - x: bad" in err


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("cli")).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_cancel_prints_the_state_the_task_ends_in(server: ServerProcess, tmp_path: Path) -> None:
    spec = tmp_path / "sleep.json"
    spec.write_text(json.dumps({"task_type": "sleep", "params": {"seconds": 60}}))
    task = json.loads(autoglm("submit", str(spec), "--json", url=server.url).stdout)
    done = autoglm("cancel", task["id"], url=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["task", task["id"], "cancelled"]
    shown = autoglm("status", task["id"], url=server.url).stdout
    assert "ago)" in shown and "cancelled" in shown


def test_workflow_list_and_cancel_and_rules_list(server: ServerProcess, tmp_path: Path) -> None:
    flow = tmp_path / "wait.yaml"
    flow.write_text(
        "name: waiting\nsteps:\n  - {name: s, task: {task_type: sleep, params: {seconds: 60}}}\n"
    )
    run_id = autoglm("workflow", "run", str(flow), url=server.url).stdout.split()[0]
    listed = json.loads(autoglm("workflow", "list", "--json", url=server.url).stdout)
    assert [r["id"] for r in listed] == [run_id]
    assert "waiting" in autoglm("workflow", "list", url=server.url).stdout
    done = autoglm("workflow", "cancel", run_id, url=server.url)
    assert done.stdout.split() == ["run", run_id, "cancelled"], done.stderr

    ruleset = tmp_path / "r.json"
    ruleset.write_text(json.dumps({"rules": [{"name": "a", "when": [{"x": {}}], "then": []}]}))
    assert (
        autoglm("rules", "push", str(ruleset), "--name", "screening", url=server.url).returncode
        == 0
    )
    rows = json.loads(autoglm("rules", "list", "--json", url=server.url).stdout)
    assert [(r["name"], r["version"]) for r in rows] == [("screening", 1)]
    assert "screening" in autoglm("rules", "list", url=server.url).stdout


def test_every_sub_command_group_is_mounted() -> None:
    # Imported, not looked up under `except ImportError`: a broken module fails loudly.
    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    for group in ("rules", "graph", "workflow", "models"):
        assert group in out


def test_json_output_of_run_and_models(server: ServerProcess, tmp_path: Path) -> None:
    flow = tmp_path / "echo.yaml"
    flow.write_text("name: quick\nsteps:\n  - {name: s, task: {task_type: echo, input: 1}}\n")
    done = autoglm("workflow", "run", str(flow), "--watch", "--json", url=server.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert json.loads(autoglm("models", "list", "--json", url=server.url).stdout) == []
