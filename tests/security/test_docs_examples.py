"""The worked example of docs/security.md, run: the configuration it shows does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers.security import app_client

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def _toml_example() -> str:
    section = DOC.read_text().split("## Outbound calls and secrets", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    return block


def test_the_outbound_example_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "autoglm.toml"
    config.write_text(_toml_example())
    monkeypatch.setenv("AUTOGLM_CONFIG", str(config))

    def entry(base_url: str, key: str) -> dict[str, object]:
        source = {"base_url": base_url, "model": "llama", "api_key": key}
        return {"name": "llama", "backend": "openai", "source": source, "task_types": ["chat"]}

    with app_client(tmp_path / "data") as api:
        assert isinstance(api, TestClient)
        ok = api.post("/v1/models/registry", json=entry("http://10.20.1.5:8000/v1", "cluster"))
        assert ok.status_code == 201, ok.text
        assert "sk-cluster-key" not in ok.text
        for base_url, key, field in (
            ("http://127.0.0.1:8000/v1", "cluster", "base_url"),
            ("http://10.20.1.5:8000/v1", "HOME", "api_key"),
        ):
            r = api.post("/v1/models/registry?replace=true", json=entry(base_url, key))
            assert r.status_code == 422, r.text
            assert r.json()["error"]["details"][0]["loc"] == ["source", field]
