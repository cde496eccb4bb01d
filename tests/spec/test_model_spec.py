from __future__ import annotations

import pytest
from pydantic import ValidationError

from open_autoglm.spec.model import (
    ArtifactFilesSource,
    ModelBackend,
    ModelSpec,
    UpstreamSource,
)

SHA = "a" * 64


def test_defaults_and_role() -> None:
    spec = ModelSpec.model_validate(
        {"name": "m", "source": "/models/m", "task_types": ["chat", "text-generation"]}
    )
    assert spec.backend is ModelBackend.HF
    assert (spec.max_batch_size, spec.max_wait_ms, spec.device) == (32, None, "cpu")
    assert spec.role == "text-generation"
    assert spec.serves("chat") and not spec.serves("embedding")


def test_transformers_backend_is_an_alias_of_hf() -> None:
    spec = ModelSpec.model_validate(
        {"name": "m", "backend": "transformers", "source": "/m", "task_types": ["embedding"]}
    )
    assert spec.backend is ModelBackend.HF


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"task_types": []}, "task_types"),
        ({"task_types": ["graph-predict"]}, "backend 'hf' serves"),
        ({"task_types": ["chat"]}, "needs one of"),
        ({"name": "a/b"}, "name"),
        ({"dtype": "int4"}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"options": {"quantize": "int3"}}, "quantize"),
        ({"options": {"replicas": -1}}, "replicas"),
        ({"options": {"replicas": "2"}}, "replicas"),
        ({"options": {"runtime": "tensorrt"}}, "runtime"),
        ({"options": {"pack_tokens": 8}}, "pack_tokens"),
        ({"options": {"pack_tokens": "big"}}, "pack_tokens"),
        ({"source": {"artifacts": {"../config.json": SHA}}}, "relative name"),
        ({"source": {"artifacts": {"model.safetensors": SHA}}}, "config.json"),
        ({"source": {"artifact": "not-a-sha"}}, "source"),
        ({"source": {"base_url": "http://x", "model": "m"}}, "needs backend 'openai'"),
        ({"backend": "openai"}, "needs source"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_rejected_entries(entry: dict[str, object], needle: str) -> None:
    base = {"name": "m", "source": "/models/m", "task_types": ["embedding"]}
    with pytest.raises(ValidationError) as info:
        ModelSpec.model_validate({**base, **entry})
    assert needle in str(info.value)


def test_source_forms() -> None:
    files = ModelSpec.model_validate(
        {
            "name": "m",
            "source": {"artifacts": {"config.json": SHA, "1_Pooling/config.json": SHA}},
            "task_types": ["embedding"],
        }
    )
    assert isinstance(files.source, ArtifactFilesSource)
    up = ModelSpec.model_validate(
        {
            "name": "r",
            "backend": "openai",
            "source": {"base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key_env": "KEY"},
            "task_types": ["chat", "embedding"],
        }
    )
    assert isinstance(up.source, UpstreamSource) and up.role is None
    graph = ModelSpec.model_validate(
        {
            "name": "g",
            "backend": "graph",
            "source": {"artifact": SHA},
            "task_types": ["graph-predict"],
            "config": {"meta_artifact": SHA},
        }
    )
    assert graph.config["meta_artifact"] == SHA
    with pytest.raises(ValidationError, match="backend 'openai' serves"):
        ModelSpec.model_validate({**up.model_dump(), "task_types": ["text-classification"]})
