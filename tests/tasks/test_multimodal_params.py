"""fusion-train's params: the schema, a known strategy, a text model when there is text; and
the fusion modules' public names, importable without torch where they must be."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from pydantic import ValidationError

from open_autoglm.tasks.multimodal import FusionTrainParams

SCHEMA = {"text": ["t"], "numeric": ["x"], "label": "y"}


def test_params_name_every_problem() -> None:
    params = FusionTrainParams.model_validate({"schema": SCHEMA, "text_model": "minilm"})
    assert params.strategy == "hybrid" and params.strategies == ["hybrid"]
    assert FusionTrainParams.model_validate(
        {"schema": SCHEMA, "text_model": "m", "strategy": "compare"}
    ).strategies == ["early", "hybrid", "late", "tabular", "text"]
    with pytest.raises(ValidationError) as exc:
        FusionTrainParams.model_validate({"schema": {**SCHEMA, "numeric": ["y"]}, "strategy": "x"})
    messages = " ".join(e["msg"] for e in exc.value.errors())
    assert "'y' is both label and numeric" in messages
    assert "unknown strategy 'x'" in messages
    with pytest.raises(ValidationError, match="name a registered embedding text_model"):
        FusionTrainParams.model_validate({"schema": SCHEMA})
    # Params cross into the worker process as a JSON dump and back.
    again = FusionTrainParams.model_validate(params.model_dump(mode="json"))
    assert again == params


MODULES = [
    "open_autoglm.spec.table",
    "open_autoglm.spec.table_loaders",
    "open_autoglm.tasks.multimodal",
    "open_autoglm.cli.fusion",
    "open_autoglm.ml.multimodal.alignment",
    "open_autoglm.ml.multimodal.batch",
    "open_autoglm.ml.multimodal.bundle",
    "open_autoglm.ml.multimodal.comparison_plot",
    "open_autoglm.ml.multimodal.embedding_cache",
    "open_autoglm.ml.multimodal.fusion",
    "open_autoglm.ml.multimodal.fusion.base",
    "open_autoglm.ml.multimodal.metrics",
    "open_autoglm.ml.multimodal.pipeline",
    "open_autoglm.ml.multimodal.preprocess",
    "open_autoglm.ml.multimodal.tabular_encoder",
    "open_autoglm.ml.multimodal.text_embedding",
    "open_autoglm.ml.multimodal.text_encoder",
    "open_autoglm.ml.multimodal.training",
]


@pytest.mark.parametrize("name", MODULES)
def test_public_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ and all(hasattr(module, n) for n in module.__all__)


def test_validating_a_request_does_not_import_torch() -> None:
    code = (
        "import sys; import open_autoglm.tasks.multimodal, open_autoglm.spec.table_loaders; "
        "from open_autoglm.ml.multimodal.fusion import strategy_names; strategy_names(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
