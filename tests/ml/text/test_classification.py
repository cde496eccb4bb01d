from __future__ import annotations

from pathlib import Path

import pytest
import torch

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.classification import Classifier


def test_scores_are_softmax_over_id2label(tiny_classifier_dir: Path) -> None:
    clf = Classifier.from_path(tiny_classifier_dir, batch_size=2)
    texts = ["it was great", "i hated it", "one two three four five six"]
    probs = clf.probabilities(texts)
    assert probs.shape == (3, 3)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))
    everything = clf.classify(texts, top_k=None)
    assert [len(r) for r in everything] == [3, 3, 3]
    assert {d["label"] for d in everything[0]} == {"negative", "neutral", "positive"}
    for row, ranked in zip(probs, everything, strict=True):
        scores = [d["score"] for d in ranked]
        assert scores == sorted(scores, reverse=True)
        assert ranked[0]["label"] == clf.labels[int(row.argmax())]
    top1 = clf.classify(texts)
    assert [r[0] for r in top1] == [r[0] for r in everything]
    assert all(len(r) == 1 for r in top1)
    with pytest.raises(ValidationError):
        clf.classify(texts, top_k=0)
