"""Fine-tune MiniLM through the API on a 2,000-row sample, then classify new texts with it.

    python benchmarks/text_train_api.py [--rows 2000] [--epochs 1] [--max-length 64]
                                        [--lr 1e-4] [--batch-size 16] [--holdout 200]

End to end as a user runs it: an ``autoglm serve`` process (bundled models registered), the
sample uploaded as a CSV artifact, a ``text-classifier-train`` job on ``minilm`` followed by
its progress events, then ``text-classification`` of held-out reviews (not in the sample)
through ``/v1/infer`` with the model the job registered. The task is ``Recommended IND``
from the review text of the women's clothing reviews (rows with text; the sample is random
with seed 0, the job's split stratified 80/10/10 with seed 0).

Prints a table and writes ``benchmarks/results/text_train_api.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from open_autoglm.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "multimodal" / "womens_clothing_reviews.parquet"
LABEL = "Recommended IND"


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    autoglm = Path(sys.executable).parent / "autoglm"
    cmd = [str(autoglm), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    cmd.append("--bundled-models")
    log = (data_dir.parent / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    from open_autoglm.client import Client

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with Client(url, timeout=2) as c:
                c.request("GET", "/healthz")
            return proc, url
        except Exception:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start; see server.log")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--holdout", type=int, default=200)
    args = ap.parse_args()

    import pandas as pd

    from open_autoglm.client import Client

    frame = pd.read_parquet(DATA).dropna(subset=["Review Text"])
    frame = frame.sample(frac=1.0, random_state=0)
    sample = frame.iloc[: args.rows]
    held = frame.iloc[args.rows : args.rows + args.holdout]
    buf = io.StringIO()
    sample.rename(columns={"Review Text": "text", LABEL: "label"})[["text", "label"]].to_csv(
        buf, index=False
    )
    with tempfile.TemporaryDirectory(prefix="text-train-bench-") as tmp:
        proc, url = start_server(Path(tmp) / "data")
        try:
            with Client(url, timeout=600) as c:
                started = time.perf_counter()
                art = c.upload_artifact(buf.getvalue().encode(), name="sample.csv")
                task = c.text_classifier_train(
                    {"artifact": art["id"], "format": "csv"},
                    model="minilm",
                    epochs=args.epochs,
                    max_length=args.max_length,
                    lr=args.lr,
                    batch_size=args.batch_size,
                    name="bench-recommend",
                )
                last = ""
                for kind, data in c.stream_events(task["id"], timeout=24 * 3600):
                    if kind == "progress" and data.get("message") != last:
                        last = str(data.get("message"))
                        d = data.get("data") or data
                        if "loss" in d:
                            print(f"  {last}  loss {d['loss']:.4f}  {d['samples_per_s']:.1f}/s"
                                  f"  ETA {d['eta_s']:.0f}s", flush=True)  # fmt: skip
                    elif kind == "status" and data.get("status") in (
                        "succeeded", "failed", "cancelled",
                    ):  # fmt: skip
                        break
                final = c.wait(task["id"], raise_on_failure=False)
                job_s = time.perf_counter() - started
                if final["status"] != "succeeded":
                    raise SystemExit(f"training {final['status']}: {final.get('error')}")
                result = final["result"]
                texts = held["Review Text"].tolist()
                t0 = time.perf_counter()
                out = c.infer(
                    task_type="text-classification", model=result["registered"], input=texts[:8]
                )
                first_s = time.perf_counter() - t0  # includes the replicas loading the model
                t0 = time.perf_counter()
                preds = []
                for i in range(0, len(texts), 32):
                    out = c.infer(
                        task_type="text-classification",
                        model=result["registered"],
                        input=texts[i : i + 32],
                    )
                    preds += [p[0]["label"] for p in out["predictions"]]
                infer_s = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    truth = [str(v) for v in held[LABEL].tolist()]
    held_acc = sum(p == t for p, t in zip(preds, truth, strict=True)) / len(truth)
    majority = max(truth.count(v) for v in set(truth)) / len(truth)
    test = result["metrics"]["test"]
    report: dict[str, Any] = {
        "rows": args.rows,
        "split": result["rows"],
        "epochs": args.epochs,
        "max_length": args.max_length,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "job_seconds": round(job_s, 1),
        "train_samples_per_s": result["samples_per_second"],
        "test_accuracy": round(test["accuracy"], 4),
        "test_macro_f1": round(test["macro_f1"], 4),
        "heldout_rows": len(truth),
        "heldout_accuracy_via_infer": round(held_acc, 4),
        "heldout_majority_class": round(majority, 4),
        "first_infer_seconds": round(first_s, 2),
        "infer_ms_per_text": round(1000 * infer_s / len(truth), 2),
        "tokens": result["tokens"],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    print()
    for key in ("job_seconds", "train_samples_per_s", "test_accuracy", "test_macro_f1",
                "heldout_accuracy_via_infer", "heldout_majority_class", "first_infer_seconds",
                "infer_ms_per_text"):  # fmt: skip
        print(f"{key:28s} {report[key]}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "text_train_api.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
