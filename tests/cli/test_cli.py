"""The ``autoglm`` command end to end against a live server (a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx

from open_autoglm import errors
from open_autoglm.client import Client


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


def test_prune_online_deletes_online_records_and_keeps_jobs(server):
    with Client(server.url, api_key="sekret") as c:
        job = c.wait(c.submit(task_type="echo", input="job")["id"], timeout=10)
        online = c.request(
            "POST",
            "/v1/infer",
            json={"task_type": "echo", "input": "online"},
        )
        assert online["result"] == "online" and c.get(online["id"])["status"] == "succeeded"
        # The online record is logged off the hot path: prune until its write has landed.
        pruned, deadline = 0, time.monotonic() + 10
        while time.monotonic() < deadline:
            out = autoglm(server, "prune-online", "--older-than", "0", "--json")
            assert out.returncode == 0, out.stderr
            pruned += json.loads(out.stdout)["pruned"]
            try:
                c.get(online["id"])
            except errors.NotFoundError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the online record was never pruned")
        assert pruned >= 1
        assert c.get(job["id"])["result"] == "job"  # a durable task is never pruned
        assert c.prune_online(3600) == 0  # nothing else ended an hour ago

    bad = autoglm(server, "prune-online", "--older-than", "-1")
    assert bad.returncode != 0 and "older-than" in bad.stderr
    for query in ("?older_than_s=-1", "?older_than_s=soon", ""):
        r = httpx.post(
            f"{server.url}/v1/tasks/prune-online{query}", headers={"Authorization": "Bearer sekret"}
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["loc"] == ["query", "older_than_s"]
    anon = httpx.post(f"{server.url}/v1/tasks/prune-online?older_than_s=0")
    assert anon.status_code == 401
