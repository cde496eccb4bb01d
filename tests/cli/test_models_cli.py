"""``autoglm models`` against a live server (a real process)."""

from __future__ import annotations

import json

import httpx
from typer.testing import CliRunner

from open_autoglm.cli.main import app


def _run(server, *args: str):
    env = {"AUTOGLM_URL": server.url, "AUTOGLM_API_KEY": "sekret", "COLUMNS": "200"}
    return CliRunner().invoke(app, ["models", *args], env=env)


def test_upload_list_show_delete(server, tmp_path):
    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder

    directory = build_tiny_bert_embedder(tmp_path / "emb")
    up = _run(server, "upload", str(directory), "--name", "cli-emb", "--task-type", "embedding")
    assert up.exit_code == 0, up.output
    assert "uploaded cli-emb" in up.output

    listed = _run(server, "list", "--json")
    assert [m["name"] for m in json.loads(listed.output)] == ["cli-emb"]
    shown = json.loads(_run(server, "show", "cli-emb").output)
    assert "1_Pooling/config.json" in shown["source"]["artifacts"]

    resp = httpx.post(
        server.url + "/v1/embeddings",
        json={"model": "cli-emb", "input": "uploaded weights serve", "encoding_format": "float"},
        headers={"Authorization": "Bearer sekret"},
        timeout=120,  # the first request starts the model's replica processes
    )
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["data"][0]["embedding"]) > 8

    assert _run(server, "delete", "cli-emb").exit_code == 0
    missing = _run(server, "show", "cli-emb")
    assert missing.exit_code == 1 and "not registered" in missing.output


def test_register_rejects_an_invalid_entry(server, tmp_path):
    entry = tmp_path / "entry.json"
    entry.write_text(
        json.dumps({"name": "x", "source": "/x", "task_types": ["embedding"], "dtype": "int4"})
    )
    out = _run(server, "register", str(entry))
    assert out.exit_code == 1
    assert "dtype" in out.output
    # A local source must be under the server's model roots; a bundled one always is.
    source = "bundled:all-minilm-l6-v2"
    entry.write_text(json.dumps({"name": "x", "source": source, "task_types": ["embedding"]}))
    ok = _run(server, "register", str(entry))
    assert ok.exit_code == 0 and "registered x (hf)" in ok.output
    assert _run(server, "register", str(entry)).exit_code == 1  # name taken
    assert _run(server, "register", str(entry), "--replace").exit_code == 0
