"""``autoglm temporal validate``: valid streams summarised, every problem printed with its
location and exit code 1; the shared Bitcoin Alpha file loads and is noted as sorted."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from helpers.paths import SHARED_DATA
from open_autoglm.cli.main import app as main_app
from open_autoglm.cli.temporal import app

runner = CliRunner()


def test_invalid_stream_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("src,dst,t,w\n1,2,10,0.5\n2,3,,1.0\n3,1,12,\n4,1,5,2\n")
    result = runner.invoke(
        app, ["validate", str(path), "--unsorted", "error"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1
    for text in ("events[1].t", "timestamp is not finite", "edge_features[2][0]", "not finite"):
        assert text in result.output, result.output


def test_unsorted_stream_is_rejected_under_the_error_policy(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"events": [[1, 2, 3], [2, 3, 1]]}))
    bad = runner.invoke(app, ["validate", str(path), "--unsorted", "error", "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.output)["details"][0]["loc"] == ["events", 1, "t"]
    ok = runner.invoke(app, ["validate", str(path), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["events"] == 2


def test_shared_file_validates_through_the_main_command() -> None:
    path = SHARED_DATA / "temporal" / "soc-sign-bitcoinalpha.csv"
    result = runner.invoke(main_app, ["temporal", "validate", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "24186 events, 3783 nodes, 1 edge features" in result.output
    assert "sorted stably" in result.output
