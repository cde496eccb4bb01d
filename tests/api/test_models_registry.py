"""``/v1/models/registry`` CRUD and validation, and the bundled models, in process."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.runtime import Runtime


def test_registry_crud(api: TestClient, tmp_path: Path) -> None:
    source = str(tmp_path / "data" / "m1")  # under the data dir: a model root
    entry = {"name": "m1", "source": source, "task_types": ["embedding"], "max_wait_ms": 5}
    created = api.post("/v1/models/registry", json=entry)
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "unloaded" and created.json()["max_wait_ms"] == 5
    assert api.post("/v1/models/registry", json=entry).status_code == 409
    replaced = api.post("/v1/models/registry?replace=true", json={**entry, "max_wait_ms": 9})
    assert replaced.status_code == 201 and replaced.json()["max_wait_ms"] == 9
    assert api.app.state.runtime.batch_policy("embedding", "m1") == (32, 0.009)  # type: ignore[attr-defined]
    assert [m["name"] for m in api.get("/v1/models/registry").json()["models"]] == ["m1"]
    assert api.get("/v1/models/registry/m1").json()["source"] == source
    assert api.delete("/v1/models/registry/m1").status_code == 204
    assert api.get("/v1/models/registry/m1").status_code == 404
    assert api.delete("/v1/models/registry/m1").status_code == 404


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"source": "/x", "task_types": ["embedding"]}, ["name"]),
        ({"name": "m", "task_types": ["embedding"]}, ["source"]),
        ({"name": "m", "source": "/x", "task_types": ["embedding"], "dtype": "int4"}, ["dtype"]),
        ({"name": "m", "source": "/x", "task_types": []}, ["task_types"]),
        ({"name": "m", "source": "/x", "task_types": ["nope"]}, []),
        (
            {"name": "m", "backend": "onnx", "source": "/x", "task_types": ["embedding"]},
            ["backend"],
        ),
    ],
)
def test_registry_validation_422(api: TestClient, body: dict[str, Any], loc: list[str]) -> None:
    resp = api.post("/v1/models/registry", json=body)
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "validation_error"
    assert any(d["loc"][: len(loc)] == loc for d in err["details"])
    assert (
        api.post(
            "/v1/models/registry", content=b"[1", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert api.get("/v1/models/registry").json()["models"] == []


def test_text_task_with_an_unregistered_model_fails_clearly(api: TestClient) -> None:
    resp = api.post("/v1/infer", json={"task_type": "embedding", "model": "ghost", "input": "x"})
    err = resp.json()["error"]
    assert resp.status_code == 404 and err["code"] == "not_found" and "ghost" in err["message"]


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A runtime with --bundled-models; conversions are cached in the shared model cache."""
    import torch

    from open_autoglm.ml.text.model_loader import default_cache_dir

    torch.set_num_threads(1)
    settings = make_settings(
        tmp_path_factory.mktemp("bundled") / "data",
        register_bundled_models=True,
        models={"cache_dir": str(default_cache_dir())},
        # One CPU: SmolLM2's llama.cpp engine decodes with one thread, as the tests' torch.
        executor={"cpu": 1},
    )
    with TestClient(create_app(runtime=Runtime(settings))) as client:
        yield client


def test_bundled_models_registered_once(bundled: TestClient) -> None:
    models = {m["name"]: m for m in bundled.get("/v1/models/registry").json()["models"]}
    assert models["minilm"]["source"] == "bundled:all-minilm-l6-v2"
    assert models["smollm2"]["source"] == "bundled:smollm2"  # the GGUF, served by llama.cpp
    assert models["smollm2"]["task_types"] == ["text-generation", "chat"]
    # Starting again over the same storage keeps the entries (same update time).
    runtime = bundled.app.state.runtime  # type: ignore[attr-defined]
    from open_autoglm.api.routes.models import register_bundled_models

    register_bundled_models(runtime.services["models"])
    again = {m["name"]: m for m in bundled.get("/v1/models/registry").json()["models"]}
    assert again["smollm2"]["updated_at"] == models["smollm2"]["updated_at"]


def test_minilm_embeddings_match_transformers(bundled: TestClient) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from open_autoglm.ml.text.loading import bundled_minilm_dir

    texts = ["Graph neural networks pass messages.", "short", "The server batches requests " * 6]
    resp = bundled.post(
        "/v1/embeddings", json={"model": "minilm", "input": texts, "encoding_format": "float"}
    )
    assert resp.status_code == 200, resp.text
    ours = np.array([d["embedding"] for d in resp.json()["data"]])
    path = bundled_minilm_dir()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    with torch.inference_mode():
        batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state  # (batch, tokens, 384)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    assert ours.shape == ref.shape == (3, 384)
    cosine = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() > 0.999


def test_smollm2_concurrent_chat_equals_alone_through_the_service(bundled: TestClient) -> None:
    """Through the platform in process (HTTP adds nothing here and SmolLM2 is slow on CPU)."""
    runtime = bundled.app.state.runtime  # type: ignore[attr-defined]
    questions = ["What is a graph?", "Name a colour.", "Say hello.", "Count to three."]
    lengths = [6, 3, 8, 5]

    def ask(i: int) -> str:
        task = runtime.submit_tracked(
            {
                "task_type": "text-generation",
                "model": "smollm2",
                "input": {"messages": [{"role": "user", "content": questions[i]}]},
                "params": {"max_tokens": lengths[i], "temperature": 0},
            },
            durable=False,
        ).result(120)
        assert task["status"] == "succeeded", task["error"]
        return str(task["result"]["text"])

    alone = [ask(i) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(ask, range(4)))
    assert together == alone
    assert all(alone)
