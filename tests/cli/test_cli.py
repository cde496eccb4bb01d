"""The ``autoglm`` command end to end against a live server (a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def autoglm(server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOGLM_URL": server.url, "AUTOGLM_API_KEY": "sekret", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "open_autoglm", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_submit_from_stdin_and_wait(server):
    out = autoglm(
        server, "submit", "-", "--json", stdin=json.dumps({"task_type": "echo", "input": "cli"})
    )
    assert out.returncode == 0, out.stderr
    task = json.loads(out.stdout)
    waited = autoglm(server, "wait", task["id"], "--json")
    assert waited.returncode == 0 and json.loads(waited.stdout)["result"] == "cli"
    status = autoglm(server, "status", task["id"])
    assert "succeeded" in status.stdout and task["id"] in status.stdout


def test_submit_file_with_wait_and_seed_flat_form(server, tmp_path):
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"task_type": "sleep", "seconds": 0.1, "priority": "high"}))
    out = autoglm(server, "submit", str(spec), "--wait", "--json")
    assert out.returncode == 0, out.stderr
    task = json.loads(out.stdout)
    assert task["status"] == "succeeded" and task["priority"] == 7


def test_submit_a_json_array_submits_all_and_waits(server, tmp_path):
    specs = tmp_path / "jobs.json"
    specs.write_text(json.dumps([{"task_type": "echo", "input": i} for i in range(5)]))
    out = autoglm(server, "submit", str(specs), "--wait", "--json")
    assert out.returncode == 0, out.stderr
    assert [t["result"] for t in json.loads(out.stdout)] == list(range(5))
    specs.write_text(json.dumps([{"task_type": "echo"}, {"task_type": "nope"}]))
    bad = autoglm(server, "submit", str(specs))
    assert bad.returncode == 1 and "tasks.1.task_type" in bad.stderr, bad.stderr


def test_bad_spec_exits_nonzero_naming_the_field(server, tmp_path):
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"task_type": "sleep", "params": {"seconds": -3}}))
    out = autoglm(server, "submit", str(spec))
    assert out.returncode == 1
    assert "params.seconds" in out.stderr


def test_failed_wait_exits_nonzero(server):
    task = json.loads(
        autoglm(
            server,
            "submit",
            "-",
            "--json",
            stdin='{"task_type": "flaky", "params": {"fail_times": 3}}',
        ).stdout
    )
    out = autoglm(server, "wait", task["id"])
    assert out.returncode == 1 and "flaky failure" in out.stdout


def test_cancel_list_task_types_plugins(server):
    task = json.loads(
        autoglm(
            server,
            "submit",
            "-",
            "--json",
            stdin='{"task_type": "sleep", "params": {"seconds": 30}}',
        ).stdout
    )
    assert autoglm(server, "cancel", task["id"]).returncode == 0
    listed = json.loads(autoglm(server, "list", "--json", "--limit", "50").stdout)
    assert task["id"] in {t["id"] for t in listed}
    types = json.loads(autoglm(server, "task-types", "--json").stdout)
    assert {"echo", "sleep"} <= {t["name"] for t in types}
    plugins = autoglm(server, "plugins")
    assert "recorder" in plugins.stdout and "failed" in plugins.stdout
