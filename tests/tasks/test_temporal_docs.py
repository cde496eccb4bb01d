"""The worked example of docs/temporal.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_worked_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (ROOT / "docs" / "temporal.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(ROOT)  # the example reads ../shared/data relative to the checkout
    exec(compile(blocks[0], "docs/temporal.md", "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "test AP" in out and "after the appended message" in out
