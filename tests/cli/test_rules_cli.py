"""``autoglm rules push`` and ``remote-eval`` against a live server (a real process)."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from open_autoglm.cli.main import app

ACCESS = {
    "rules": [
        {
            "name": "block_access",
            "when": [{"user_login": {"user": "?u", "risk_score": {">": 0.8}}}],
            "then": [{"emit": {"event": "blocked", "user": "?u"}}],
        }
    ]
}


def _run(server, *args: str):
    env = {"AUTOGLM_URL": server.url, "AUTOGLM_API_KEY": "sekret", "COLUMNS": "200"}
    return CliRunner().invoke(app, ["rules", *args], env=env)


def test_push_then_remote_eval(server, tmp_path):
    ruleset = tmp_path / "access.yaml"
    ruleset.write_text(yaml.safe_dump(ACCESS))
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([{"type": "user_login", "user": "eve", "risk_score": 0.9}]))

    first = _run(server, "push", str(ruleset))
    assert first.exit_code == 0, first.output
    assert "'access' version 1" in first.output  # named after the file
    again = _run(server, "push", str(ruleset), "--name", "access")
    assert "version 2" in again.output

    out = _run(server, "remote-eval", "access", "--facts", str(facts), "--json")
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["version"] == 2 and result["emitted"][0]["user"] == "eve"
    shown = _run(server, "remote-eval", "access", "--facts", str(facts))
    assert f"{result['fired']} rule firing(s)" in shown.output and "eve" in shown.output


def test_push_invalid_and_eval_missing_exit_nonzero(server, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"name": "r", "when": [{"x": {"y": {"~": 1}}}]}]}))
    out = _run(server, "push", str(bad))
    assert out.exit_code == 1 and "rules.0.when.0.x.y" in out.output
    facts = tmp_path / "facts.json"
    facts.write_text("[]")
    missing = _run(server, "remote-eval", "nope", "--facts", str(facts))
    assert missing.exit_code == 1 and "not found" in missing.output
