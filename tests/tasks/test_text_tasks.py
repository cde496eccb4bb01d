from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from open_autoglm.errors import TaskFailedError, ValidationError
from open_autoglm.executors.context import InlineContext
from open_autoglm.executors.model_cache import ModelCache
from open_autoglm.ml.text.model_loader import TextModelLoader
from open_autoglm.tasks.text import (
    ClassificationParams,
    EmbeddingParams,
    GenerationParams,
    text_task_types,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import torch

    from open_autoglm.ml.text.tiny import (
        build_tiny_bert_classifier,
        build_tiny_bert_embedder,
        build_tiny_gpt2,
    )

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("text-task-models")
    entries = {
        "emb": {"source": str(build_tiny_bert_embedder(root / "e")), "task_types": ["embedding"]},
        "gen": {"source": str(build_tiny_gpt2(root / "g")), "task_types": ["text-generation"]},
        "cls": {
            "source": str(build_tiny_bert_classifier(root / "c")),
            "task_types": ["text-classification"],
        },
    }
    loader = TextModelLoader(cache_dir=root / "cache")
    cache = ModelCache(lambda name: loader(entries[name]), budget_bytes=50_000_000)
    yield cache
    cache.clear()


TYPES = {t.name: t for t in text_task_types()}


def ctx(models: Any, task_type: str, model: str, input: Any, **params: Any) -> InlineContext:
    params_model = TYPES[task_type].params_model
    return InlineContext(
        task_type=task_type,
        model=model,
        input=input,
        params=params_model.model_validate(params),
        services={"models": models},
    )


def test_task_types_are_declared() -> None:
    assert set(TYPES) == {"text-generation", "text-classification", "embedding"}
    for task_type in TYPES.values():
        assert task_type.requires_model and task_type.requires_input
        assert task_type.describe()["params_schema"]["type"] == "object"
    assert TYPES["embedding"].batch_key == ("normalize", "pooling")
    assert TYPES["text-generation"].batch_handler is not None
    assert TYPES["text-classification"].batch_handler is None


def test_param_validation() -> None:
    for bad in (
        {"max_tokens": 0},
        {"max_tokens": 4097},
        {"temperature": 2.1},
        {"top_p": 0},
        {"top_k": -1},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": [""]},
        {"unknown": 1},
    ):
        with pytest.raises(PydanticValidationError):
            GenerationParams.model_validate(bad)
    assert GenerationParams.model_validate({"stop": "x"}).stop == ["x"]
    with pytest.raises(PydanticValidationError):
        EmbeddingParams.model_validate({"pooling": "median"})
    with pytest.raises(PydanticValidationError):
        ClassificationParams.model_validate({"top_k": 0})


def test_embedding_handler_and_batch_agree(models: Any) -> None:
    single = TYPES["embedding"].handler(ctx(models, "embedding", "emb", "hello world"))
    assert single["dimension"] == 64 and len(single["embeddings"]) == 1
    assert single["usage"]["prompt_tokens"] > 0
    contexts = [
        ctx(models, "embedding", "emb", ["the cat sat", "hello world"]),
        ctx(models, "embedding", "emb", 42),  # bad input fails alone
        ctx(models, "embedding", "emb", "hello world"),
    ]
    batch = dict(TYPES["embedding"].batch_handler(contexts))  # type: ignore[misc]
    assert len(batch[0]["embeddings"]) == 2
    assert isinstance(batch[1], ValidationError)
    assert batch[2]["embeddings"][0] == pytest.approx(single["embeddings"][0], abs=1e-5)
    assert batch[0]["embeddings"][1] == pytest.approx(single["embeddings"][0], abs=1e-5)


def test_generation_handler_and_batch_agree(models: Any) -> None:
    params = {"max_tokens": 5, "chat": False}
    alone = TYPES["text-generation"].handler(ctx(models, "text-generation", "gen", "hi", **params))
    assert alone["finish_reason"] == "length"
    assert alone["usage"]["completion_tokens"] == 5
    contexts = [
        ctx(models, "text-generation", "gen", ["one two", "hi"], **params),
        ctx(models, "text-generation", "gen", {"messages": [{"role": "user", "content": "hi"}]}),
        ctx(models, "text-generation", "gen", {"bad": True}),
    ]
    batch = TYPES["text-generation"].batch_handler(contexts)  # type: ignore[misc]
    assert batch[0]["generations"][1]["text"] == alone["text"]
    assert batch[0]["usage"]["completion_tokens"] == 10
    assert batch[1]["usage"]["prompt_tokens"] > alone["usage"]["prompt_tokens"]  # chat template
    assert isinstance(batch[2], ValidationError)


def test_classification_handler(models: Any) -> None:
    out = TYPES["text-classification"].handler(
        ctx(models, "text-classification", "cls", ["great", "awful"], top_k=2)
    )
    assert [len(p) for p in out["predictions"]] == [2, 2]
    assert out["predictions"][0][0]["score"] >= out["predictions"][0][1]["score"]


def test_wrong_model_role_is_rejected(models: Any) -> None:
    with pytest.raises(ValidationError, match="not loaded for embedding"):
        TYPES["embedding"].handler(ctx(models, "embedding", "cls", "hello"))
    with pytest.raises(ValidationError):
        TYPES["embedding"].handler(ctx(models, "embedding", "emb", []))
    no_service = InlineContext(
        task_type="embedding", model="emb", input="hi", params=EmbeddingParams()
    )
    with pytest.raises(TaskFailedError, match="no models service"):
        TYPES["embedding"].handler(no_service)


def test_cancelled_generation_task_stops(models: Any) -> None:
    from open_autoglm.errors import TaskCancelledError

    # Mid-decode cancellation is covered at the engine level (tests/ml/text); here the
    # handler must notice a cancelled task rather than decode for nothing.
    context = ctx(models, "text-generation", "gen", "hello", max_tokens=250, chat=False)
    context.cancel("cancelled")
    with pytest.raises(TaskCancelledError):
        TYPES["text-generation"].handler(context)


def test_zero_shot_labels_score_texts_with_an_embedding_model(models: Any) -> None:
    out = TYPES["text-classification"].handler(
        ctx(models, "text-classification", "emb", ["great", "awful"], labels=["a", "b", "c"])
    )
    assert [len(p) for p in out["predictions"]] == [1, 1]
    every = TYPES["text-classification"].handler(
        ctx(models, "text-classification", "emb", "great", labels=["a", "b"], top_k=None)
    )["predictions"][0]
    assert {p["label"] for p in every} == {"a", "b"}
    assert sum(p["score"] for p in every) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValidationError, match=r"params\.labels needs an embedding model"):
        TYPES["text-classification"].handler(
            ctx(models, "text-classification", "cls", "great", labels=["a", "b"])
        )


def test_zero_shot_picks_the_nearest_label() -> None:
    import torch

    from open_autoglm.ml.text.zero_shot import zero_shot_predictions

    labels = torch.eye(3)  # (3 labels, dim 3)
    texts = torch.nn.functional.normalize(torch.tensor([[0.2, 1.0, 0.1], [1.0, 0.0, 0.9]]), dim=1)
    out = zero_shot_predictions(texts, labels, ["x", "y", "z"], top_k=2)
    assert [[p["label"] for p in row] for row in out] == [["y", "x"], ["x", "z"]]
    assert out[0][0]["score"] > 0.9


def test_zero_shot_with_minilm_tells_billing_from_urgent() -> None:
    from open_autoglm.ml.text.loading import bundled_minilm_dir
    from open_autoglm.ml.text.model_loader import TextModelLoader

    entry = {
        "source": str(bundled_minilm_dir()),
        "task_types": ["embedding"],
        "options": {"linear": "torch", "pack_tokens": 512},
    }
    cache = ModelCache(lambda name: TextModelLoader()(entry), budget_bytes=500_000_000)
    try:
        out = TYPES["text-classification"].handler(
            ctx(
                cache,
                "text-classification",
                "minilm",
                ["I was charged twice on my invoice", "the site is down, we are losing sales now"],
                labels=["billing", "outage"],
            )
        )
    finally:
        cache.clear()
    assert [p[0]["label"] for p in out["predictions"]] == ["billing", "outage"]
