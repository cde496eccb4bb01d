"""Fine-tuning a tiny BERT through the shared training facility: it learns, it is repeatable,
and what it saves loads as a text-classification model."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from helpers.classifiers import LABELS, sentiment_texts
from open_autoglm.ml.text.classification import Classifier
from open_autoglm.ml.text.finetune.export import save_classifier
from open_autoglm.ml.training.fit import fit
from open_autoglm.tasks.text_train import (
    TextTrainParams,
    TrainedTextClassifier,
    check_table,
    prepare_text_job,
    train_text_classifier,
)


def sentiment_table(n: int, seed: int = 0) -> dict[str, list]:
    texts, labels = sentiment_texts(n, seed)
    return {"review": texts, "stars": [LABELS[i] for i in labels]}


PARAMS = TextTrainParams(
    text_column="review",
    label_column="stars",
    epochs=6,
    lr=2e-3,
    batch_size=8,
    max_length=32,
    patience=2,
)


def train(model_dir: Path, params: TextTrainParams = PARAMS) -> TrainedTextClassifier:
    return train_text_classifier(
        check_table(sentiment_table(240), params),
        params,
        str(model_dir),
        run=lambda job: fit(job, params.distributed),
    )


@pytest.fixture(scope="module")
def trained(tiny_embedder_dir: Path) -> TrainedTextClassifier:
    return train(tiny_embedder_dir)


def test_fine_tuning_learns_a_separable_task(trained: TrainedTextClassifier) -> None:
    history = trained.fit.history
    # The untrained head guesses: the first epoch's validation F1 is far from the last's.
    assert history[0]["val_macro_f1"] < 0.7
    assert trained.validation["macro_f1"] >= 0.95
    assert trained.test is not None and trained.test["accuracy"] >= 0.9
    assert trained.test["rows"] == 24 and trained.split.sizes()["train"] == 192
    assert history[trained.fit.best_epoch]["val_macro_f1"] == max(
        h["val_macro_f1"] for h in history
    )
    assert sum(sum(row) for row in trained.test["confusion"]) == 24
    assert trained.job.label_names == ["negative", "neutral", "positive"]


def test_the_job_pickles_and_bucketing_saves_padding(trained: TrainedTextClassifier) -> None:
    job = pickle.loads(pickle.dumps(trained.job))
    assert job.global_batches(3) == trained.job.global_batches(3)
    tokens = trained.tokens
    assert tokens["padded_tokens_per_epoch"] <= tokens["padded_tokens_per_epoch_unbucketed"]


def test_saved_model_serves_text_classification(
    trained: TrainedTextClassifier, tmp_path: Path
) -> None:
    files = save_classifier(trained.model, trained.job.model_dir, tmp_path, max_length=32)
    names = {p.name for p in files}
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in files)
    clf = Classifier.from_path(tmp_path, linear="torch")
    assert clf.labels == ["negative", "neutral", "positive"]
    texts, labels = sentiment_texts(30, seed=7)  # rows the model never saw
    top = [r[0]["label"] for r in clf.classify(texts)]
    assert sum(t == LABELS[i] for t, i in zip(top, labels, strict=True)) >= 27


def test_a_given_split_column_is_used(tiny_embedder_dir: Path) -> None:
    table = sentiment_table(30)
    table["part"] = ["train"] * 20 + ["validation"] * 5 + ["test"] * 5
    params = TextTrainParams.model_validate(
        {**PARAMS.model_dump(exclude={"split"}), "split": {"column": "part"}}
    )
    job, split, _ = prepare_text_job(check_table(table, params), params, str(tiny_embedder_dir))
    assert split.train == list(range(20)) and split.test == list(range(25, 30))
    assert job.val_rows == list(range(20, 25))
