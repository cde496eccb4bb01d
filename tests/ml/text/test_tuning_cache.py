"""An embedder's measured Linear form and pack cap are kept in the cache dir and reused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from open_autoglm.ml.text.model_loader import TextModelLoader
from open_autoglm.ml.text.tuning import PACK_CANDIDATES
from open_autoglm.ml.text.tuning_cache import TuningSource


def _entry(source: Path) -> dict[str, object]:
    return {"name": "emb", "source": str(source), "task_types": ["embedding"]}


def _answer_file(cache: Path) -> Path:
    (path,) = (cache / "tuning").glob("*.json")
    return path


def test_a_second_load_reads_the_kept_answer_instead_of_measuring(
    tiny_embedder_dir: Path, tmp_path: Path
) -> None:
    loader = TextModelLoader(tmp_path)
    first = loader.load(_entry(tiny_embedder_dir))
    assert first.tuning is TuningSource.MEASURED and first.pack_tokens in PACK_CANDIDATES
    again = TextModelLoader(tmp_path).load(_entry(tiny_embedder_dir))
    assert again.tuning is TuningSource.CACHED
    assert (again.linear, again.pack_tokens) == (first.linear, first.pack_tokens)
    # What it reads is the file: an answer no measurement gives is taken as it is.
    path = _answer_file(tmp_path)
    kept = json.loads(path.read_text())
    path.write_text(json.dumps({**kept, "pack_tokens": 777}))
    assert TextModelLoader(tmp_path).load(_entry(tiny_embedder_dir)).pack_tokens == 777


def test_an_unusable_answer_or_changed_weights_are_measured_again(
    tiny_embedder_dir: Path, tmp_path: Path
) -> None:
    model = shutil.copytree(tiny_embedder_dir, tmp_path / "model")
    TextModelLoader(tmp_path / "cache").load(_entry(model))
    path = _answer_file(tmp_path / "cache")
    path.write_text(json.dumps({"linear": "no-such-form", "pack_tokens": 256}))
    remeasured = TextModelLoader(tmp_path / "cache").load(_entry(model))
    assert remeasured.tuning is TuningSource.MEASURED
    assert json.loads(path.read_text())["linear"] == remeasured.linear  # and kept again
    (weights,) = model.glob("*.safetensors")
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    changed = TextModelLoader(tmp_path / "cache").load(_entry(model))
    assert changed.tuning is TuningSource.MEASURED
    assert len(list((tmp_path / "cache" / "tuning").glob("*.json"))) == 2


def test_fixed_options_leave_nothing_to_measure_or_keep(
    tiny_embedder_dir: Path, tmp_path: Path
) -> None:
    entry = {**_entry(tiny_embedder_dir), "options": {"linear": "torch", "pack_tokens": 128}}
    model = TextModelLoader(tmp_path).load(entry)
    assert model.tuning is TuningSource.FIXED and model.pack_tokens == 128
    assert not list((tmp_path / "tuning").glob("*.json"))
