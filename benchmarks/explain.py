"""Explanation speed and memory: one review on a MiniLM-sized classifier, one Cora node on a
GCN, and peak memory as integration steps grow.

    python benchmarks/explain.py [--reviews 20] [--nodes 20] [--steps 32]

(a) Text: all-MiniLM-L6-v2's encoder (the bundled weights) with a fresh 3-class head, so the
    cost is a real MiniLM-sized classifier's; reviews from the clothing data set, layer
    integrated gradients with ``--steps`` steps in internal batches of 16. The anchor is one
    plain forward of the same review (what serving it costs). Targets: p50 <= 2 s per review.
(b) Graph: a 2-layer GCN trained on Cora (200 epochs), integrated gradients for ``--nodes``
    test nodes on their receptive field. Anchor: one forward of the whole graph. Target: p50
    <= 2 s per node.
(c) Memory: the peak RSS growth (sampled every 2 ms) while explaining one review at 16, 64
    and 256 steps (internal batch 16): bounded if it does not grow with the steps.

One torch thread. Prints a table and writes ``benchmarks/results/explain.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _p50(xs: list[float]) -> float:
    return statistics.median(xs)


def _minilm_classifier() -> object:
    from transformers import AutoTokenizer, BertForSequenceClassification

    from open_autoglm.ml.text.loading import LoadedModel, ModelRole, bundled_minilm_dir

    path = bundled_minilm_dir()
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(path, num_labels=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return LoadedModel(model, tokenizer, Path(path), ModelRole.TEXT_CLASSIFICATION, 0.0)


def text_bench(n: int, steps: int) -> dict[str, float]:
    import pandas as pd

    from open_autoglm.ml.explain.tokens import TextClassifierExplainer

    reviews = (
        pd.read_parquet(DATA / "multimodal" / "womens_clothing_reviews.parquet")["Review Text"]
        .dropna()
        .head(n)
        .tolist()
    )
    loaded = _minilm_classifier()
    explainer = TextClassifierExplainer(loaded, max_tokens=128)
    explainer.explain(reviews[0], steps=steps)  # warm-up
    times, forwards, gaps = [], [], []
    for text in reviews:
        ids, mask = explainer.encode(text)
        t = time.perf_counter()
        with torch.no_grad():
            loaded.model(input_ids=ids, attention_mask=mask)
        forwards.append(time.perf_counter() - t)
        t = time.perf_counter()
        e = explainer.explain(text, steps=steps)
        times.append(time.perf_counter() - t)
        change = abs(e.output - e.baseline_output) or 1e-9
        gaps.append(abs(e.delta or 0.0) / change)
    return {"p50_s": _p50(times), "max_s": max(times), "forward_p50_s": _p50(forwards),
            "x_forward": _p50(times) / _p50(forwards), "median_relative_gap": _p50(gaps)}  # fmt: skip


def graph_bench(n: int, steps: int) -> dict[str, float]:
    from open_autoglm.ml.explain.graph import explain_node, fidelity_plus
    from open_autoglm.ml.graph.data import GraphTensors
    from open_autoglm.ml.graph.models import ModelConfig, ModelKind, build_model
    from open_autoglm.spec.graph_loaders import load_graph_npz

    data = GraphTensors.from_graph(load_graph_npz(DATA / "graphs" / "cora_planetoid.npz"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(ModelKind.GCN, in_dim=data.x.size(1), out_dim=7))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    y = data.y
    for _ in range(200):
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index)
        loss = torch.nn.functional.cross_entropy(out[data.train_idx], y[data.train_idx])
        loss.backward()
        optimizer.step()
    model.eval()
    t = time.perf_counter()
    with torch.no_grad():
        acc = (
            (model(data.x, data.edge_index).argmax(1)[data.test_idx] == y[data.test_idx])
            .float()
            .mean()
        )
    forward = time.perf_counter() - t
    times, plus, rand = [], [], []
    for node in data.test_idx[:n].tolist():
        t = time.perf_counter()
        e = explain_node(model, data.x, data.edge_index, node, layers=2, steps=steps)
        times.append(time.perf_counter() - t)
        p, r = fidelity_plus(model, data.x, e, k=5)
        plus.append(p)
        rand.append(r)
    return {"p50_s": _p50(times), "max_s": max(times), "forward_s": forward,
            "test_accuracy": float(acc), "fidelity_plus": statistics.mean(plus),
            "fidelity_plus_random": statistics.mean(rand)}  # fmt: skip


def _memory_child(steps: int) -> None:
    import threading

    import psutil

    from open_autoglm.ml.explain.tokens import TextClassifierExplainer

    torch.set_num_threads(1)
    loaded = _minilm_classifier()
    explainer = TextClassifierExplainer(loaded)
    text = "This dress fits well, the fabric is soft and I would buy it again in another colour."
    explainer.explain(text, steps=4)  # warm: allocator pools and lazy imports
    proc = psutil.Process()
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:  # the peak during the explanation, not the load's
        while not done.wait(0.002):
            peak[0] = max(peak[0], proc.memory_info().rss)

    watcher = threading.Thread(target=sample)
    watcher.start()
    explainer.explain(text, steps=steps, internal_batch_size=16)
    done.set()
    watcher.join()
    print(json.dumps({"steps": steps, "growth_mb": (peak[0] - before) / 2**20}))


def memory_bench() -> list[dict[str, float]]:
    import subprocess

    rows = []
    for steps in (16, 64, 256):  # each in a fresh process: peak RSS only grows
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(steps)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--memory-child", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_child:
        _memory_child(args.memory_child)
        return
    text = text_bench(args.reviews, args.steps)
    graph = graph_bench(args.nodes, args.steps)
    memory = memory_bench()
    print(f"{'case':<34}{'p50 s':>8}{'max s':>8}{'x forward':>11}")
    print(f"{'review, MiniLM classifier, IG':<34}{text['p50_s']:>8.3f}{text['max_s']:>8.3f}"
          f"{text['x_forward']:>11.1f}")  # fmt: skip
    print(f"{'Cora node, GCN, IG':<34}{graph['p50_s']:>8.3f}{graph['max_s']:>8.3f}"
          f"{graph['p50_s'] / graph['forward_s']:>11.1f}")  # fmt: skip
    print(f"text: median relative completeness gap {text['median_relative_gap']:.2e}")
    print(f"Cora: GCN test accuracy {graph['test_accuracy']:.3f}; fidelity+ (top-5 edges) "
          f"{graph['fidelity_plus']:.3f} vs random {graph['fidelity_plus_random']:.3f}")  # fmt: skip
    for row in memory:
        print(f"memory: {row['steps']:>4} steps -> peak RSS +{row['growth_mb']:.1f} MB")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "explain.json").write_text(
        json.dumps({"text": text, "graph": graph, "memory": memory, "steps": args.steps}, indent=2)
    )


if __name__ == "__main__":
    main()
