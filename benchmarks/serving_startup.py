"""Cold start of ``autoglm serve --bundled-models``: time to ``/readyz`` and to the first
``/v1/embeddings`` answer (``minilm``), from the moment the server process is started.

    .venv/bin/python benchmarks/serving.py --cold-start [--rounds 2] [--anchor REF]
    .venv/bin/python benchmarks/serving_startup.py [--rounds 2] [--anchor REF]

Each round starts the server on a fresh data directory (``fresh``: nothing converted,
measured or cached yet), stops it, and starts it again on the same directory (``restart``).
The client polls ``/readyz`` every 50 ms and sends one embedding request the moment it
answers 200, as a script run right after ``autoglm serve`` would; the request waits for the
model however its load goes. ``load_s`` is what the server logs as the model's load time.

``--anchor REF`` runs the same rounds on the source tree of a git revision (extracted to a
temporary directory, same interpreter and packages) alternated with this tree, so a shared
machine's load lands on both; the table gives each figure and its ratio to the anchor's.
Writes ``benchmarks/results/serving_startup.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from open_autoglm.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LOADED = re.compile(rb"loaded model minilm in ([0-9.]+) s")
PHASES = ("fresh", "restart")


@contextlib.contextmanager
def source_tree(ref: str) -> Iterator[Path]:
    """The ``src`` directory of git revision ``ref``, extracted to a temporary directory."""
    tmp = Path(tempfile.mkdtemp(prefix="autoglm-anchor-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "src"],
            check=True,
            capture_output=True,
        ).stdout
        tar = tmp / "src.tar"
        tar.write_bytes(archive)
        with tarfile.open(tar) as t:
            t.extractall(tmp, filter="data")
        yield tmp / "src"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def start_once(src: Path, data: Path, log_path: Path, timeout: float = 240.0) -> dict[str, Any]:
    """Start the server from ``src`` on ``data``; seconds to /readyz and to the first
    embedding, and the load time it logs; the server is stopped before returning."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")},
        "PYTHONPATH": str(src),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("AUTOGLM_MODELS__CACHE_DIR", None)  # the model cache lives in the data dir
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "open_autoglm.cli.main", "serve", "--bundled-models",
             "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)],
            cwd=ROOT, env=env, stdout=log, stderr=log,
        )  # fmt: skip
        try:
            ready = _until_ready(proc, url, t0 + timeout) - t0
            r = httpx.post(
                url + "/v1/embeddings",
                json={"model": "minilm", "input": "the first request", "encoding_format": "float"},
                timeout=timeout,
            )
            embed = time.monotonic() - t0
            r.raise_for_status()
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    loaded = LOADED.search(log_path.read_bytes())
    return {
        "ready_s": round(ready, 2),
        "first_embedding_s": round(embed, 2),
        "load_s": float(loaded.group(1)) if loaded else None,
    }


def _until_ready(proc: subprocess.Popen[bytes], url: str, deadline: float) -> float:
    with httpx.Client(timeout=1.0) as client:
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready; see its log")
            try:
                if client.get(url + "/readyz").status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.05)


def measure(trees: dict[str, Path], rounds: int) -> list[dict[str, Any]]:
    """``rounds`` x (fresh, restart) per tree, trees alternated within each round."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(rounds):
        for name, src in trees.items():
            data = Path(tempfile.mkdtemp(prefix="autoglm-cold-"))
            try:
                for phase in PHASES:
                    log = RESULTS / f"serving_startup-{name}-{phase}.log"
                    got = start_once(src, data / "data", log)
                    samples.setdefault((name, phase), []).append(got)
                    print(f"round {r + 1} {name:>8} {phase:>7}: {got}", flush=True)
            finally:
                shutil.rmtree(data, ignore_errors=True)
    rows = []
    for (name, phase), runs in samples.items():
        row: dict[str, Any] = {"tree": name, "phase": phase, "runs": runs}
        for key in ("ready_s", "first_embedding_s", "load_s"):
            values = [v[key] for v in runs if v[key] is not None]
            row[key] = round(statistics.median(values), 2) if values else None
        rows.append(row)
    anchor = {r["phase"]: r for r in rows if r["tree"] == "anchor"}
    for row in rows:
        base = anchor.get(row["phase"])
        if base and base["first_embedding_s"]:
            row["embedding_vs_anchor"] = round(
                row["first_embedding_s"] / base["first_embedding_s"], 2
            )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'tree':>8} {'phase':>8} {'readyz s':>9} {'1st embed s':>12} {'load s':>7} {'x anchor':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = r.get("embedding_vs_anchor")
        print(
            f"{r['tree']:>8} {r['phase']:>8} {r['ready_s']:>9} {r['first_embedding_s']:>12} "
            f"{r['load_s'] if r['load_s'] is not None else '-':>7} "
            f"{ratio if ratio is not None else '-':>9}"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--anchor", default=None, help="git revision to compare with (e.g. main)")
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as stack:
        trees = {}
        if args.anchor:
            trees["anchor"] = stack.enter_context(source_tree(args.anchor))
        trees["this"] = ROOT / "src"
        rows = measure(trees, args.rounds)
    print_table(rows)
    out = RESULTS / "serving_startup.json"
    out.write_text(
        json.dumps({"anchor": args.anchor, "rounds": args.rounds, "rows": rows}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
