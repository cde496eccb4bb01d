"""Faithfulness of token attributions: completeness, the model-randomisation sanity check,
determinism, and memory bounded by the internal batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from scipy.stats import spearmanr

from helpers.classifiers import NEGATIVE, POSITIVE, sentiment_texts
from open_autoglm.ml.explain.similarity import PairSimilarityExplainer
from open_autoglm.ml.explain.tokens import TextClassifierExplainer
from open_autoglm.ml.text.loading import load_model


@pytest.fixture(scope="module")
def loaded(tiny_sentiment_dir: Path) -> Any:
    torch.set_num_threads(1)
    return load_model(tiny_sentiment_dir, "text-classification", linear="torch")


TEXTS = sentiment_texts(12, seed=7)[0]


@pytest.mark.parametrize("output", ["probability", "logit"])
@pytest.mark.parametrize("steps", [32, 64])
def test_attributions_add_up_to_the_output_change(loaded: Any, output: str, steps: int) -> None:
    explainer = TextClassifierExplainer(loaded, output=output)
    for text in TEXTS[:6]:
        e = explainer.explain(text, steps=steps)
        change = e.output - e.baseline_output  # both computed apart from the attributions
        assert abs(sum(e.scores) - change) <= 0.01 * abs(change) + 1e-6, (text, e.delta, change)
        assert e.delta is not None and abs(e.delta) <= 0.01 * abs(change) + 1e-6


def test_the_cue_word_carries_the_prediction(loaded: Any) -> None:
    explainer = TextClassifierExplainer(loaded)
    for text in TEXTS:
        cue = [w for w in text.split() if w in POSITIVE + NEGATIVE]
        if not cue:
            continue
        e = explainer.explain(text)
        assert e.target == ("positive" if cue[0] in POSITIVE else "negative")
        top = max(range(len(e.tokens)), key=lambda i: e.scores[i])
        assert e.tokens[top] == cue[0], list(zip(e.tokens, e.scores, strict=True))


def _ranks_agree(a: Any, b: Any) -> float:
    """Mean Spearman correlation over texts, word positions only (specials score 0 always)."""
    values = []
    for x, y in zip(a, b, strict=True):
        words = [i for i, t in enumerate(x.tokens) if not (t.startswith("[") and t.endswith("]"))]
        values.append(spearmanr([x.scores[i] for i in words], [y.scores[i] for i in words])[0])
    return float(sum(values) / len(values))


def test_randomised_weights_give_unrelated_attributions(
    loaded: Any, tiny_sentiment_dir: Path
) -> None:
    # Adebayo et al. 2018: if an explanation survives re-initialising the model, it explains
    # the input, not the model. The same seeds give the same copy, so the figure is stable.
    trained = TextClassifierExplainer(loaded, output="logit")
    scrambled = load_model(tiny_sentiment_dir, "text-classification", linear="torch")
    torch.manual_seed(1)
    for module in scrambled.model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # Linear, Embedding, LayerNorm: fresh random weights
    random = TextClassifierExplainer(scrambled, output="logit")
    texts = TEXTS
    target = "positive"
    a = [trained.explain(t, target=target) for t in texts]
    b = [random.explain(t, target=target) for t in texts]
    assert _ranks_agree(a, a) == pytest.approx(1.0)
    assert _ranks_agree(a, b) < 0.2


def test_same_input_same_explanation(loaded: Any) -> None:
    explainer = TextClassifierExplainer(loaded)
    first = explainer.explain(TEXTS[2], steps=16)
    again = explainer.explain(TEXTS[2], steps=16)
    assert first.scores == again.scores and first.tokens == again.tokens


def test_shap_partition_is_additive_and_seeded(loaded: Any) -> None:
    explainer = TextClassifierExplainer(loaded)
    text = next(t for t in TEXTS if any(w in POSITIVE for w in t.split()))
    first = explainer.explain_shap(text, max_evals=60, seed=3)
    again = explainer.explain_shap(text, max_evals=60, seed=3)
    assert first.scores == again.scores
    assert first.delta is not None and abs(first.delta) < 1e-4  # reported, and small
    cue = next(w for w in text.split() if w in POSITIVE)
    top = max(range(len(first.tokens)), key=lambda i: first.scores[i])
    assert first.tokens[top].strip() == cue


def test_internal_batches_bound_memory(loaded: Any) -> None:
    seen: list[int] = []
    hook = loaded.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(int(kw["input_ids"].shape[0])), with_kwargs=True
    )
    try:
        TextClassifierExplainer(loaded).explain(TEXTS[0], steps=128, internal_batch_size=8)
    finally:
        hook.remove()
    # 128 steps went through in forwards of at most 8 rows: memory does not grow with steps
    assert max(seen) <= 8 and sum(n for n in seen if n > 1) >= 128


def test_a_pair_is_explained_on_both_sides(tiny_embedder_dir: Path) -> None:
    loaded = load_model(tiny_embedder_dir, "embedding", linear="torch")
    sim, left, right = PairSimilarityExplainer(loaded).explain(
        "the cat sat on the mat", "a dog sat on the log", steps=48
    )
    assert -1.0 <= sim <= 1.0 and left.output == pytest.approx(sim, abs=1e-5)
    for side in (left, right):
        change = side.output - side.baseline_output
        assert abs(sum(side.scores) - change) <= 0.01 * abs(change) + 1e-6
        assert side.tokens[0] == "[CLS]" and side.scores[0] == 0.0
