"""A tiny sentiment classifier trained in a few seconds: explanations need a model whose
prediction depends on its input, and a random-init one barely does."""

from __future__ import annotations

import random
from pathlib import Path

from open_autoglm.ml.text.tiny import TINY_CORPUS, build_tiny_bert_classifier

POSITIVE = ("great", "loved")
NEGATIVE = ("terrible", "hated")
_FILLER = sorted({w for line in TINY_CORPUS for w in line.split()} - set(POSITIVE) - set(NEGATIVE))


LABELS = ("negative", "neutral", "positive")


def sentiment_texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` texts of 4-8 filler words; a negative or positive word decides the label, and a
    text with neither is neutral (so an all-padding baseline reads as neutral)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        words = rng.sample(_FILLER, rng.randint(4, 8))
        label = i % 3
        if label != 1:
            cue = rng.choice(POSITIVE if label == 2 else NEGATIVE)
            words.insert(rng.randrange(len(words) + 1), cue)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def train_tiny_sentiment(out_dir: Path, *, steps: int = 40, seed: int = 0) -> Path:
    """Build the tiny BERT classifier (negative, neutral, positive), fit it, save it in place."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = build_tiny_bert_classifier(out_dir, labels=LABELS, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(path)
    texts, labels = sentiment_texts(256, seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        lo = (step * 16) % len(texts)
        batch = tokenizer(texts[lo : lo + 16], padding=True, return_tensors="pt")
        loss = model(**batch, labels=torch.tensor(labels[lo : lo + 16])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    return path


__all__ = ["LABELS", "NEGATIVE", "POSITIVE", "sentiment_texts", "train_tiny_sentiment"]
