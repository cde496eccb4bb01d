"""What every command shares: one-line errors, human times, and the verbs people look for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _verbs(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if hasattr(command, "commands"):  # a group: its verbs
        for name, sub in command.commands.items():
            yield from _verbs(sub, (*path, name))
    else:
        yield path, command


def test_every_verb_but_serve_prints_json_on_request() -> None:
    from typer.main import get_command

    lacking = [
        " ".join(path)
        for path, verb in _verbs(get_command(app))
        if path != ("serve",) and not any("--json" in p.opts for p in verb.params)
    ]
    assert lacking == []


@pytest.mark.parametrize(
    "args",
    [
        ["rules", "remote-eval", "screening", "--facts", "FACTS"],
        ["rules", "push", "RULESET"],
        ["temporal", "predict", "m", "--src", "1", "--t", "1", "--dst", "2"],
    ],
)
def test_server_verbs_of_the_groups_are_one_line_against_a_stopped_server(
    args: list[str], tmp_path: Path
) -> None:
    facts = tmp_path / "facts.json"
    facts.write_text("[]")
    ruleset = tmp_path / "r.json"
    ruleset.write_text(json.dumps({"rules": [{"name": "a", "when": [{"x": {}}], "then": []}]}))
    files = {"FACTS": str(facts), "RULESET": str(ruleset)}
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = autoglm(*(files.get(a, a) for a in args), url=url)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.strip().splitlines() == [
        f"error: cannot reach {url}: is the server running? set AUTOGLM_URL or --url"
    ]


def test_offline_validators_answer_in_json_valid_or_not(tmp_path: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "r.json"
    good.write_text(json.dumps({"rules": [{"name": "a", "when": [{"x": {}}], "then": []}]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"name": "r", "when": [{"x": {"y": {"~": 1}}}]}]}))
    ok = runner.invoke(app, ["rules", "validate", str(good), "--json"])
    assert (ok.exit_code, json.loads(ok.stdout)) == (
        0,
        {"valid": True, "file": str(good), "rules": 1},
    )
    refused = runner.invoke(app, ["rules", "validate", str(bad), "--json"])
    assert refused.exit_code == 1
    problem = json.loads(refused.stdout)
    assert problem["code"] == "validation_error"
    assert any(d["loc"][:4] == ["rules", 0, "when", 0] for d in problem["details"])

    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "name: two\nsteps:\n  - {name: a, task: {task_type: echo, input: 1}}\n"
        "  - {name: b, depends_on: [a], task: {task_type: echo, input: 2}}\n"
    )
    shown = runner.invoke(app, ["workflow", "validate", str(flow), "--json"])
    assert json.loads(shown.stdout) == {"valid": True, "name": "two", "steps": ["a", "b"]}
    flow.write_text("name: two\nsteps:\n  - {name: a, depends_on: [zz], task: {task_type: echo}}\n")
    broken = runner.invoke(app, ["workflow", "validate", str(flow), "--json"])
    assert broken.exit_code == 1 and "zz" in json.loads(broken.stdout)["message"]
