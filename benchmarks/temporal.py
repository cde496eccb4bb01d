"""Temporal link prediction: TGAT, TGN and EdgeBank on Wikipedia, CollegeMsg, Bitcoin Alpha.

    python benchmarks/temporal.py [--datasets wikipedia collegemsg bitcoinalpha]
        [--models edgebank edgebank-tw tgat tgn] [--seeds 0 1 2] [--epochs 10]
        [--patience 3] [--lr 1e-4] [--max-events N] [--threads 1]

Protocol (TGAT, TGN, DyGLib): chronological 70/15/15 split by time; 10% of all nodes, drawn
among those active after the training period, are held out of training, and inductive
figures score the validation/test events that touch a node unseen in training. Every batch
of 200 test events is scored from the state left by the events before it, against one
negative per positive for each strategy: random (same source, uniform destination),
historical and inductive (Poursafaei et al. 2022: at most half from pairs seen before the
batch / seen only after training, the rest random pairs). AP and ROC-AUC are computed per
batch and averaged. Learned models train with BCE on one random negative per positive,
AdamW, cosine annealing, DropEdge 0.1 on sampled neighbours, early stopping on validation
AP. Figures are mean and standard deviation over the seeds that ran; ``events/s`` is
training events per second of training steps (evaluation excluded). Results are merged
into ``benchmarks/results/temporal.json`` after every run, so runs can be split up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from open_autoglm.ml.temporal.evaluation import EdgeBankScorer, ModuleScorer, evaluate_split
from open_autoglm.ml.temporal.models import (
    TemporalModelConfig,
    TemporalModelKind,
    build_temporal_model,
)
from open_autoglm.ml.temporal.split import chronological_split
from open_autoglm.ml.temporal.training import TemporalTrainConfig, train_link_predictor
from open_autoglm.spec.event_loaders import load_events
from open_autoglm.spec.events import EventStream

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "temporal.json"
DATA = ROOT.parent / "shared" / "data" / "temporal"
FILES = {
    "wikipedia": "ml_wikipedia.txt",
    "collegemsg": "CollegeMsg.txt",
    "bitcoinalpha": "soc-sign-bitcoinalpha.csv",
}
# Published test AP, transductive, random negatives (DyGLib, Yu et al. 2023; EdgeBank paper).
PUBLISHED = {
    ("wikipedia", "edgebank"): 90.37,
    ("collegemsg", "edgebank"): 76.20,
    ("wikipedia", "tgat"): 96.94,
    ("wikipedia", "tgn"): 98.45,
    ("collegemsg", "tgat"): 79.63,
    ("collegemsg", "tgn"): 92.34,
}
COLUMNS = [
    ("transductive", "random"),
    ("inductive", "random"),
    ("transductive", "historical"),
    ("inductive", "historical"),
    ("transductive", "inductive"),
]


def run_one(stream: EventStream, model: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    split = chronological_split(stream)
    out: dict[str, Any] = {}
    if model.startswith("edgebank"):
        window = None
        if model == "edgebank-tw":  # the test period's length, as in the EdgeBank paper
            window = float(stream.t[split.test].max() - split.test_time)
        t0 = time.perf_counter()
        out = evaluate_split(EdgeBankScorer(window), stream, split, seed=seed)
        out["seconds"] = time.perf_counter() - t0
        return out
    torch.manual_seed(seed)
    cfg = TemporalModelConfig(
        kind=TemporalModelKind(model),
        num_nodes=stream.num_nodes,
        edge_dim=max(stream.edge_dim, 1),
        dim=args.dim,
        time_dim=args.dim,
        layers=args.layers,
        neighbors=args.neighbors,
        drop_edge=0.1,
    )
    net = build_temporal_model(cfg)
    train = TemporalTrainConfig(
        epochs=args.epochs, lr=args.lr, patience=args.patience, seed=seed, batch_size=200
    )
    t0 = time.perf_counter()
    res = train_link_predictor(
        net, stream, split, train,
        on_epoch=lambda e, m: print(
            f"    epoch {e}: loss {m['loss']:.4f} val AP {m['val_ap']:.4f} "
            f"{m['events_per_s']:.0f} events/s", flush=True,
        ),
    )  # fmt: skip
    out = evaluate_split(ModuleScorer(net), stream, split, seed=seed)
    out.update(
        seconds=time.perf_counter() - t0,
        events_per_s=res.events_per_second,
        epochs_run=len(res.history),
        best_epoch=res.best_epoch,
    )
    return out


def _load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return {"runs": {}}


def summarise(runs: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (dataset, model): mean and spread of every metric over seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for key, r in runs.items():
        ds, model, _ = key.split("/")
        groups.setdefault((ds, model), []).append(r)
    rows = []
    for (ds, model), rs in sorted(groups.items()):
        row: dict[str, Any] = {"dataset": ds, "model": model, "seeds": len(rs)}
        for setting, neg in COLUMNS:
            for metric in ("ap", "auc"):
                vals = [100 * r[f"test_{setting}_{neg}_{metric}"] for r in rs]
                row[f"{setting}_{neg}_{metric}"] = statistics.fmean(vals)
                row[f"{setting}_{neg}_{metric}_std"] = statistics.pstdev(vals)
        eps = [r["events_per_s"] for r in rs if "events_per_s" in r]
        row["events_per_s"] = statistics.fmean(eps) if eps else None
        row["epochs_run"] = [r.get("epochs_run") for r in rs]
        row["published_ap"] = PUBLISHED.get((ds, model))
        row["note"] = rs[0].get("note", "")
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'dataset':<13}{'model':<13}{'n':>2} " + " ".join(
        f"{(s[:5] + '/' + n[:4]):>15}" for s, n in COLUMNS
    )
    print("test AP (mean ± sd over seeds); AUC in the JSON")
    print(head + f" {'AUC tr/rnd':>13} {'events/s':>9} {'published':>9}")
    for r in rows:
        cells = " ".join(
            f"{r[f'{s}_{n}_ap']:>8.2f} ± {r[f'{s}_{n}_ap_std']:<4.2f}" for s, n in COLUMNS
        )
        eps = f"{r['events_per_s']:.0f}" if r["events_per_s"] else "-"
        pub = f"{r['published_ap']:.2f}" if r["published_ap"] else "-"
        auc = f"{r['transductive_random_auc']:.2f}"
        print(
            f"{r['dataset']:<13}{r['model']:<13}{r['seeds']:>2} {cells} {auc:>13} {eps:>9} {pub:>9}"
        )


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table (test AP; transductive ROC-AUC with random negatives)."""
    head = ["data set", "model", "n"] + [f"{s} / {n}" for s, n in COLUMNS]
    head += ["AUC tr / random", "events/s", "published AP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["dataset"], r["model"], str(r["seeds"])]
        cells += [f"{r[f'{s}_{n}_ap']:.2f} ± {r[f'{s}_{n}_ap_std']:.2f}" for s, n in COLUMNS]
        cells.append(f"{r['transductive_random_auc']:.2f}")
        cells.append(f"{r['events_per_s']:.0f}" if r["events_per_s"] else "-")
        cells.append(f"{r['published_ap']:.2f}" if r["published_ap"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=list(FILES), choices=list(FILES))
    parser.add_argument(
        "--models", nargs="+", default=["edgebank", "edgebank-tw", "tgat", "tgn"],
        choices=["edgebank", "edgebank-tw", "tgat", "tgn"],
    )  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--neighbors", type=int, default=10)
    parser.add_argument("--max-events", type=int, default=0, help="0 = the whole stream")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--note", default="", help="stored with each run (e.g. reduced epochs)")
    parser.add_argument("--report-only", action="store_true", help="print the stored results")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to merge into")
    parser.add_argument(
        "--merge", nargs="*", type=Path, default=[], help="merge these results files' runs first"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = _load_results(args.results)
    for extra in args.merge:
        results["runs"].update(_load_results(extra)["runs"])
    if args.merge:
        results["summary"] = summarise(results["runs"])
        args.results.write_text(json.dumps(results, indent=2))
    if not args.report_only:
        for ds in args.datasets:
            stream = load_events(DATA / FILES[ds])
            if args.max_events:
                stream = stream.select(np.arange(stream.num_events) < args.max_events)
            for model in args.models:
                for seed in args.seeds:
                    print(f"{ds} {model} seed {seed} ({stream.num_events} events)", flush=True)
                    r = run_one(stream, model, seed, args)
                    r["note"] = args.note
                    r["events"] = stream.num_events
                    if not model.startswith("edgebank"):
                        r["settings"] = {
                            k: getattr(args, k)
                            for k in ("epochs", "patience", "lr", "dim", "layers", "neighbors")
                        }
                    results = _load_results(args.results)  # another run may have written
                    results["runs"][f"{ds}/{model}/{seed}"] = r
                    results["machine"] = {
                        "python": platform.python_version(),
                        "torch": torch.__version__,
                    }
                    results["summary"] = summarise(results["runs"])
                    args.results.parent.mkdir(parents=True, exist_ok=True)
                    args.results.write_text(json.dumps(results, indent=2))
                    print(
                        f"  test AP tr/rnd {100 * r['test_transductive_random_ap']:.2f} "
                        f"ind/rnd {100 * r['test_inductive_random_ap']:.2f} "
                        f"tr/hist {100 * r['test_transductive_historical_ap']:.2f}",
                        flush=True,
                    )
    rows = summarise(results["runs"])
    print(markdown_table(rows) if args.markdown else "", end="\n" if args.markdown else "")
    print_table(rows)


if __name__ == "__main__":
    main()
