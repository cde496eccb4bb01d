"""MiniLM embedding serving: Open-AutoGLM against the baselines, one run, servers alternated.

    .venv/bin/python benchmarks/serving.py [--seconds 5] [--rounds 3] [--concurrency 1,8,32,64]
                                          [--no-int8] [--replicas N]
    .venv/bin/python benchmarks/serving.py --cold-start [--rounds 2] [--anchor REF]

``--cold-start`` measures the start instead (``benchmarks/serving_startup.py``).

Targets (same bundled all-MiniLM-L6-v2, same deterministic 6-40 word sentences, same
closed-loop load from a separate process on 127.0.0.1, see ``benchmarks/loadgen.py``):

(a) ``flask-default``  Flask + gunicorn, 2 sync workers, torch threads at their default
(b) ``flask-1thread``  the same with 1 torch thread per worker
(c) ``autoglm-embeddings``  Open-AutoGLM ``POST /v1/embeddings`` (OpenAI shape, float)
    ``autoglm-infer``       Open-AutoGLM ``POST /v1/infer`` (task spec, same task type)
    ``autoglm-ort-fp32``    opt-in: ``/v1/embeddings`` on ``options.runtime: onnx`` (ONNX
                            Runtime float32, same weights; not torch: compare with ``x(dO)``)
    ``autoglm-int8``        opt-in: ``/v1/embeddings`` on ``options.quantize: onnx-int8``
(d) ``loop-*``  no HTTP: a plain loop (per text, batch 32, bucketed batch 32 packed as the
    server runs it or in padded passes, ORT bucketed) in one process and in two at once
    (``-x2``, one per core: the physical limit)

All servers are started first and stay up. A round measures every HTTP target at every
concurrency level in turn, then the loop (d) while the servers idle; ``--rounds`` rounds run
one after the other, so slow drift of a shared machine spreads over all targets, the loop
included, instead of landing on one. A row is the round with the median QPS (its latencies
are that round's); ``qps_rounds`` lists every round, and the table's ``spread`` column is
their (max - min) / median. Because the loop at the end of a round can run minutes after a
level's HTTP measurements (on this shared machine the loop once sped up by 31% from the
first round to the third while the servers did not), each level is also followed at once
by a short run of the reference loop (the server's forward, batch 32, two processes):
``x(dP)`` is the median over rounds of QPS over that paired loop. The paired loop runs just
before the level's targets and again just after, and the pair's mean is the reference, so
drift within the level lands on both sides; and it runs the very forward the server's
replicas measured for themselves at load (the Linears' form and the pack cap, from
``GET /v1/models``), where every loop spawn would otherwise measure afresh and, on a noisy
machine, sometimes pick differently from the server (MKL or torch Linears, a cap of 512
or 1024: 3-8% apart). With one sample each, the
loop measured 459 and 497 texts/s in two runs an hour apart, and the int8/fp32 ratio at c=32
moved by 0.1.

Open-AutoGLM runs with its defaults: no thread variables in its environment; each embedding
model is served by one worker process per CPU with one torch thread each (float32 Linears
in oneDNN, MKL on packed weights or torch's own, and the pack cap, as measured at load);
the scheduler batches up
to 32 requests without holding small batches back (the replica pool shares out what waits).
Server CPU is the server process tree's CPU seconds per wall second (replicas included).
``--replicas N`` serves the models with N worker processes instead (``models.replicas``), and
the paired loop runs in N processes: with 1 on this 2-core machine, the server process has a
core of its own beside the one replica, so ``x(dP)`` shows what serving costs per replica
core, apart from the CPU the server process itself takes from the replicas at 2 on 2 cores.
Writes ``benchmarks/results/serving.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx

from benchmarks.serving_baselines import (
    REFERENCE,
    RESULTS,
    SENTENCES,
    TARGETS,
    Target,
    measure_loop,
    measure_target,
)
from open_autoglm.ports import free_port


@contextlib.contextmanager
def autoglm_server(int8: bool, replicas: int | None = None) -> Iterator[tuple[str, int]]:
    """An ``autoglm serve`` process with ``minilm`` (and ``minilm-int8``) registered and warm;
    ``replicas`` worker processes per model instead of the default (one per CPU)."""
    from open_autoglm.ml.text.model_loader import default_cache_dir

    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="autoglm-bench-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")},
        "HF_HUB_OFFLINE": "1",
        # Reuse ONNX exports across runs; materialised copies stay in the temp data dir.
        "AUTOGLM_MODELS__CACHE_DIR": str(default_cache_dir()),
    }
    if replicas is not None:
        env["AUTOGLM_MODELS__REPLICAS"] = str(replicas)
    log = open(RESULTS / "autoglm-serving.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "open_autoglm.cli.main", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--data-dir", str(data)],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"autoglm did not start; see {log.name}")
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        entries = [
            {"name": "minilm", "source": "bundled:all-minilm-l6-v2"},
            {
                "name": "minilm-ort",
                "source": "bundled:all-minilm-l6-v2",
                "options": {"runtime": "onnx"},
            },
        ]
        if int8:
            entries.append(
                {
                    "name": "minilm-int8",
                    "source": "bundled:all-minilm-l6-v2",
                    "options": {"quantize": "onnx-int8"},
                }
            )
        for entry in entries:
            r = httpx.post(url + "/v1/models/registry", json={**entry, "task_types": ["embedding"]})
            r.raise_for_status()
            warm = httpx.post(
                url + "/v1/embeddings",
                json={"model": entry["name"], "input": "warm up", "encoding_format": "float"},
                timeout=300,
            )
            warm.raise_for_status()
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def autoglm_targets(url: str, pid: int, int8: bool) -> list[Target]:
    def emb(model: str) -> Any:
        return lambda i: {
            "model": model,
            "input": SENTENCES[i % len(SENTENCES)],
            "encoding_format": "float",
        }

    targets = [
        Target("autoglm-embeddings", url + "/v1/embeddings", emb("minilm"), pid),
        Target(
            "autoglm-infer",
            url + "/v1/infer",
            lambda i: {
                "task_type": "embedding",
                "model": "minilm",
                "input": SENTENCES[i % len(SENTENCES)],
            },
            pid,
        ),
    ]
    targets.append(Target("autoglm-ort-fp32", url + "/v1/embeddings", emb("minilm-ort"), pid))
    if int8:
        targets.append(Target("autoglm-int8", url + "/v1/embeddings", emb("minilm-int8"), pid))
    return targets


def _model_of(target: Target) -> str:
    return str(target.body_factory(0)["model"])


def _replica_stats(url: str, model: str) -> dict[str, Any] | None:
    """The model's replica pool as ``GET /v1/models`` reports it (None: no replicas)."""
    for m in httpx.get(url + "/v1/models").json()["data"]:
        if m["id"] == model and m.get("replicas"):
            return dict(m["replicas"])
    return None


def _replica_counts(url: str, model: str) -> tuple[int, int] | None:
    """(calls, texts) the model's replica pool has run so far (the warm-up included)."""
    info = _replica_stats(url, model)
    return (int(info["batches"]), int(info["texts"])) if info else None


def _replica_forwards(url: str, model: str) -> list[dict[str, Any]] | None:
    """The forward ``model``'s replicas measured at load, one dict per distinct setting, for
    the paired loop to run the same (None if the model has no replicas or reports nothing)."""
    info = _replica_stats(url, model) or {}
    if not info.get("linear") or not info.get("pack_tokens"):
        return None
    linears, packs = info["linear"], info["pack_tokens"]
    linears = linears if isinstance(linears, list) else [linears]
    packs = packs if isinstance(packs, list) else [packs]
    n = max(len(linears), len(packs))
    return [{"linear": linears[i % len(linears)], "pack_tokens": int(packs[i % len(packs)])}
            for i in range(n)]  # fmt: skip


def _paired(
    seconds: float, forwards: list[dict[str, Any]] | None, when: str, procs: int = 2
) -> float:
    """QPS of the reference loop (``procs`` processes) running ``forwards``, printed."""
    (ref,) = measure_loop(seconds, threads=1, procs=(procs,), modes=(REFERENCE,), quiet=True,
                          forwards=forwards)  # fmt: skip
    print(f"  paired {REFERENCE}-x{procs} qps={ref['qps']:7.1f} ({when})", flush=True)
    return float(ref["qps"])


def print_table(rows: list[dict[str, Any]]) -> None:
    def qps_of(target: str) -> dict[Any, float]:
        return {r["concurrency"]: r["qps"] for r in rows if r["target"] == target}

    a, b = qps_of("flask-default"), qps_of("flask-1thread")
    d1 = qps_of("loop-batch32-bucketed").get(None)
    d2 = qps_of("loop-batch32-bucketed-x2").get(None)
    d_ort = qps_of("loop-onnx-batch32-bucketed-x2").get(None)
    d_mkl = qps_of("loop-batch32-bucketed-torch-linear-x2").get(None)
    d_8 = qps_of("loop-batch8-bucketed-x2").get(None)

    def ratio(x: float, ref: float | None) -> str:
        return f"{x / ref:6.2f}" if ref else f"{'-':>6}"

    print(
        f"\n{'target':<32} {'conc':>4} {'qps':>7} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu':>5} {'x(a)':>6} {'x(b)':>6} {'p50/b':>6} {'x(d1)':>6} {'x(d2)':>6} {'x(dT)':>6} "
        f"{'x(dO)':>6} {'x(d8)':>6} {'x(dP)':>6} {'tpc':>5} {'spread':>6} "
        f"{'err':>4}"
    )
    p50_b = {r["concurrency"]: r["p50_ms"] for r in rows if r["target"] == "flask-1thread"}
    for r in rows:
        c = r["concurrency"]
        lat = " ".join(
            f"{r[k]:8.1f}" if k in r else f"{'-':>8}" for k in ("mean_ms", "p50_ms", "p99_ms")
        )
        p50 = ratio(r["p50_ms"], p50_b.get(c)) if "p50_ms" in r else f"{'-':>6}"
        tpc = f"{r['texts_per_call']:5.1f}" if "texts_per_call" in r else f"{'-':>5}"
        spread = f"{r['qps_spread']:6.2f}" if "qps_spread" in r else f"{'-':>6}"
        paired = f"{r['x_d_paired']:6.2f}" if "x_d_paired" in r else f"{'-':>6}"
        print(
            f"{r['target']:<32} {'-' if c is None else c:>4} {r['qps']:7.1f} {lat} "
            f"{r['server_cpu_cores']:5.2f} {ratio(r['qps'], a.get(c))} {ratio(r['qps'], b.get(c))} "
            f"{p50} {ratio(r['qps'], d1)} {ratio(r['qps'], d2)} {ratio(r['qps'], d_mkl)} "
            f"{ratio(r['qps'], d_ort)} {ratio(r['qps'], d_8)} {paired} {tpc} {spread} "
            f"{r.get('errors', 0):>4}"
        )
    print("x(a)/x(b): QPS vs Flask default / 1-thread at the same concurrency; p50/b: p50 vs "
          "Flask 1-thread's; x(d1)/x(d2): vs the no-HTTP bucketed loop (the server's torch "
          "forward: packed rows, Linears as tuned at load) in 1 / 2 processes; x(dT): the loop in padded "
          "passes through torch's own Linear (MKL, as in (a)/(b)) in 2 processes; x(dO): vs the ONNX Runtime fp32 bucketed "
          "loop in 2 processes; x(d8): vs the bucketed loop (server's forward) in calls of 8, "
          "about the size of each replica's calls at c=32, in 2 processes; x(dP): median over rounds "
          "of QPS over that loop, in as many processes as the server has replicas (2 unless "
          "--replicas), with the replicas' own Linears and pack cap, measured just "
          "before and just after that round's level (their mean); tpc: texts per "
          "replica call the server actually ran; spread: (max - min) / median QPS over the "
          "rounds (the row is the median round)")  # fmt: skip


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median QPS, with every round's QPS and their spread."""
    ordered = sorted(rounds, key=lambda r: r["qps"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    qps = [r["qps"] for r in rounds]
    row["qps_rounds"] = qps
    row["qps_spread"] = (max(qps) - min(qps)) / row["qps"] if row["qps"] else 0.0
    return row


def main() -> None:
    if "--cold-start" in sys.argv:  # time to /readyz and the first embedding instead
        from benchmarks.serving_startup import main as cold_start

        cold_start([a for a in sys.argv[1:] if a != "--cold-start"])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3, help="measurements per target and level")
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--no-int8", action="store_true", help="skip the ONNX int8 row")
    ap.add_argument("--no-baselines", action="store_true", help="only Open-AutoGLM (quick look)")
    ap.add_argument("--no-loop", action="store_true", help="skip the no-HTTP loop (d)")
    ap.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="worker processes per model (default: one per CPU); the paired loop runs as many",
    )
    args = ap.parse_args()
    if args.replicas is not None and not 1 <= args.replicas <= (os.cpu_count() or 1):
        ap.error(f"--replicas must be between 1 and the CPU count ({os.cpu_count()})")
    int8 = not args.no_int8
    paired_procs = args.replicas or 2
    concurrency = [int(c) for c in args.concurrency.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        print("starting servers ...", flush=True)
        baselines = () if args.no_baselines else ("flask-default", "flask-1thread")
        targets = [stack.enter_context(TARGETS[name]()) for name in baselines]
        url, pid = stack.enter_context(autoglm_server(int8, args.replicas))
        targets += autoglm_targets(url, pid, int8)
        models = {t.name: _model_of(t) for t in targets if t.name.startswith("autoglm-")}
        http: dict[tuple[int, str], list[dict[str, Any]]] = {
            (c, t.name): [] for c in concurrency for t in targets
        }
        loop: dict[str, list[dict[str, Any]]] = {}
        for r in range(args.rounds):
            for c in concurrency:
                print(f"round {r + 1}/{args.rounds}, concurrency {c}:", flush=True)
                forwards = _replica_forwards(url, "minilm")
                # The reference loop brackets this level's targets.
                paired_before = (
                    None
                    if args.no_loop
                    else _paired(args.seconds, forwards, "before", paired_procs)
                )
                for target in targets:
                    model = models.get(target.name)
                    before = _replica_counts(url, model) if model else None
                    (row,) = measure_target(target, [c], args.seconds)
                    if model and before:
                        after = _replica_counts(url, model)
                        if after and after[0] > before[0]:
                            calls = after[0] - before[0]
                            row["texts_per_call"] = (after[1] - before[1]) / calls
                    http[(c, target.name)].append(row)
                if paired_before is not None:
                    paired_after = _paired(args.seconds, forwards, "after", paired_procs)
                    for target in targets:
                        last = http[(c, target.name)][-1]
                        last["paired_loop_qps"] = (paired_before + paired_after) / 2
                        last["paired_loop_before_after"] = [paired_before, paired_after]
                        last["paired_loop_forwards"] = forwards
                        last["paired_loop_processes"] = paired_procs
            if not args.no_loop:  # in every round too: the limit drifts like the servers do
                print(f"round {r + 1}/{args.rounds}, loop (no HTTP, servers idle):", flush=True)
                for row in measure_loop(args.seconds, threads=1):
                    loop.setdefault(row["target"], []).append(row)
        for rounds in http.values():  # every round's row carries them: any can be the median
            paired = [r["qps"] / r["paired_loop_qps"] for r in rounds if "paired_loop_qps" in r]
            if paired:
                middle = sorted(paired)[(len(paired) - 1) // 2]
                for r in rounds:
                    r.update(x_d_paired_rounds=paired, x_d_paired=middle)
        rows.extend(median_round(r) for r in http.values())
        rows.extend(median_round(r) for r in loop.values())
        # Replica pools' counters: calls, texts (so texts per call), restarts.
        replicas = {
            m["id"]: m.get("replicas") for m in httpx.get(url + "/v1/models").json()["data"]
        }
    print_table(rows)
    out = RESULTS / "serving.json"
    meta = {
        "seconds": args.seconds,
        "rounds": args.rounds,
        "sentences": len(SENTENCES),
        "cpus": os.cpu_count(),
        "wall_seconds": time.perf_counter() - started,
        "autoglm": {
            "replicas": (
                f"{args.replicas} worker processes per model, 1 torch thread each"
                if args.replicas
                else "default: one worker process per CPU, 1 torch thread each"
            ),
            "replica_stats": replicas,
            "batching": "max 32, no hold (replica-served default)",
        },
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out} in {meta['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
