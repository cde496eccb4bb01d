"""Embedding-serving baselines for MiniLM, measured in one run under the same closed-loop load.

    .venv/bin/python benchmarks/serving_baselines.py [--seconds 6] [--concurrency 1,8,32,64]
                                                    [--targets flask-default,flask-1thread,loop]

(a) ``flask-default``: Flask under gunicorn, 2 sync workers, one tokenize+forward per request,
    torch threads left at their default (each worker uses every core: oversubscribed).
(b) ``flask-1thread``: the same with 1 torch thread per worker.
(d) ``loop``: no HTTP; a plain loop over the same sentences in calls of 32 texts (and of 8:
    ``-batch8-``, the size of the server's replica calls at c=32): one text per
    forward (plain transformers), batches of 32 without and with length bucketing
    (``Embedder``, the server's forward: packed rows, its Linears' form and pack size
    measured at load as the server's replicas do;
    ``-padded``: the same bucketed into padded passes instead of packed; ``-torch-linear``:
    padded passes through torch's own Linear, i.e. MKL, as in (a) and (b)), and the bucketed
    loop in ONNX Runtime fp32 (packed too); 1 torch thread (``--loop-threads``), in one
    process and in two processes at once (``-x2``: both cores, the machine's physical limit).
Open-AutoGLM's ``/v1/embeddings`` (c) plugs in as another entry of ``TARGETS``: a context
manager yielding a :class:`Target` (url, body factory, server pid).

Load: :func:`benchmarks.loadgen.run_closed_loop` from a separate process on 127.0.0.1 with the
same deterministic mixed-length sentences (6-40 words). Server CPU is the server process
tree's user+system CPU seconds per wall second (cores busy). Ratios are against
``flask-default`` at the same concurrency. Writes ``benchmarks/results/serving_baselines.json``.
Needs ``flask`` and ``gunicorn`` in the venv (bench-only dependencies).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import psutil

from benchmarks.loadgen import run_closed_loop
from benchmarks.sentences import mixed_sentences
from open_autoglm.ports import free_port

RESULTS = ROOT / "benchmarks" / "results"
SENTENCES = mixed_sentences(512, seed=7)


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    body_factory: Callable[[int], Any]
    pid: int


def _cpu_seconds(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


@contextlib.contextmanager
def gunicorn_target(name: str, torch_threads: int | None) -> Iterator[Target]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    if torch_threads:
        env["BENCH_TORCH_THREADS"] = str(torch_threads)
    else:
        env.pop("BENCH_TORCH_THREADS", None)
    log = open(RESULTS / f"{name}.log", "wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "-w", "2", "-b", f"127.0.0.1:{port}", "--timeout", "120", "--backlog", "256",
            "benchmarks.flask_minilm_app:create_app()",
        ],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/predict"
    try:
        deadline = time.monotonic() + 90
        ready = 0
        while ready < 4:  # both workers must have loaded the model
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log.name}")
            try:
                ready += httpx.post(url, json={"text": "warm up"}, timeout=30).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.3)
        yield Target(name, url, lambda i: {"text": SENTENCES[i % len(SENTENCES)]}, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


TARGETS: dict[str, Callable[[], contextlib.AbstractContextManager[Target]]] = {
    "flask-default": lambda: gunicorn_target("flask-default", None),
    "flask-1thread": lambda: gunicorn_target("flask-1thread", 1),
}


def measure_target(target: Target, concurrency: list[int], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for c in concurrency:
        cpu0, t0 = _cpu_seconds(target.pid), time.perf_counter()
        stats = run_closed_loop(
            target.url, target.body_factory, concurrency=c, duration=seconds, warmup=1.0
        )
        # CPU over the whole call includes the warm-up second; wall time covers it too.
        cores = (_cpu_seconds(target.pid) - cpu0) / (time.perf_counter() - t0)
        rows.append({"target": target.name, **stats, "server_cpu_cores": cores})
        print(
            f"  {target.name:<16} c={c:<3} qps={stats['qps']:7.1f} p50={stats['p50_ms']:7.1f}ms "
            f"p99={stats['p99_ms']:7.1f}ms cpu={cores:4.2f} "
            f"client={stats['client_cpu_cores']:4.2f} errors={stats['errors']}",
            flush=True,
        )
    return rows


LOOP_MODES = (
    "loop-single",
    "loop-batch32",
    "loop-batch32-bucketed-torch-linear",
    "loop-batch32-bucketed-padded",
    "loop-batch32-bucketed",
    "loop-onnx-batch32-bucketed",
    # Calls of 8: about what each of the server's two replicas gets at c=32 (32 requests
    # over two processes, some always in flight over HTTP): the same forward at that size.
    "loop-batch8-bucketed",
)


REFERENCE = "loop-batch32-bucketed"
"""The loop (d) the serving targets are measured against: the server's forward, batch 32."""


def _loop_worker(
    mode: str,
    seconds: float,
    threads: int,
    barrier: Any,
    out: Any,
    forward: dict[str, Any] | None = None,
) -> None:
    """One process of (d): load, warm up, wait for the others, then loop for ``seconds``.

    ``forward`` (``linear``, ``pack_tokens``) fixes what the embedder otherwise measures at
    load, so the loop can run exactly the forward a server's replica measured for itself."""
    import torch

    # Default threads oversubscribe a shared 2-core box (spinning OpenMP workers), like (a).
    torch.set_num_threads(threads)
    from transformers import AutoModel, AutoTokenizer

    from open_autoglm.ml.text.embedding import Embedder
    from open_autoglm.ml.text.loading import bundled_minilm_dir, load_model
    from open_autoglm.ml.text.model_loader import default_cache_dir
    from open_autoglm.ml.text.onnx_embedding import OnnxEmbedder, export_encoder_onnx

    path = bundled_minilm_dir()
    fn: Callable[[list[str]], Any]
    if mode == "loop-single":
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()

        def fn(texts: list[str]) -> None:
            for text in texts:
                batch = tokenizer([text], truncation=True, max_length=256, return_tensors="pt")
                with torch.inference_mode():
                    hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)

    elif mode == "loop-onnx-batch32-bucketed":
        loaded = load_model(path, "embedding")
        onnx = OnnxEmbedder(
            loaded, export_encoder_onnx(loaded, default_cache_dir() / "onnx", int8=False)
        )
        fn = lambda texts: onnx.embed(texts, bucket=True)  # noqa: E731
    else:
        linear = "torch" if mode.endswith("-torch-linear") else "auto"
        pack = not mode.endswith(("-torch-linear", "-padded"))
        fixed = forward or {}
        embedder = Embedder.from_path(
            path,
            batch_size=32,
            linear=fixed.get("linear", linear),
            pack=pack,
            pack_tokens=fixed.get("pack_tokens", "auto"),
        )
        bucket = "bucketed" in mode
        fn = lambda texts: embedder.embed(texts, bucket=bucket)  # noqa: E731
    call = 8 if "-batch8-" in mode else 32
    fn(SENTENCES[:32])  # warm-up
    barrier.wait()
    done, cpu0, start = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        # Calls of 32 texts (the batch the server's scheduler forms at c >= 32), or of 8.
        fn([SENTENCES[(done + i) % len(SENTENCES)] for i in range(call)])
        done += call
    out.put((done, time.perf_counter() - start, time.process_time() - cpu0))


def measure_loop(
    seconds: float,
    threads: int,
    procs: tuple[int, ...] = (1, 2),
    modes: tuple[str, ...] = LOOP_MODES,
    quiet: bool = False,
    forwards: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """(d) no HTTP: per-text forward, batches of 32 without / with length bucketing, and the
    bucketed loop in ONNX Runtime fp32; each in 1 process and in ``procs`` processes at once
    (one per core: the machine's physical limit). Texts go in calls of 32. ``forwards``:
    process i runs ``forwards[i % len]`` (see :func:`_loop_worker`) instead of measuring."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    rows = []
    for n in procs:
        for mode in modes:
            barrier, out = ctx.Barrier(n), ctx.Queue()
            workers = [
                ctx.Process(
                    target=_loop_worker,
                    args=(mode, seconds, threads, barrier, out),
                    kwargs={"forward": forwards[i % len(forwards)] if forwards else None},
                )
                for i in range(n)
            ]
            for w in workers:
                w.start()
            parts = [out.get(timeout=seconds + 300) for _ in workers]
            for w in workers:
                w.join()
            done = sum(p[0] for p in parts)
            wall = max(p[1] for p in parts)
            name = mode if n == 1 else f"{mode}-x{n}"
            row = {
                "target": name, "concurrency": None, "requests": done, "seconds": wall,
                "qps": done / wall, "server_cpu_cores": sum(p[2] for p in parts) / wall,
                "torch_threads": threads, "processes": n,
            }  # fmt: skip
            rows.append(row)
            if not quiet:
                print(
                    f"  {name:<30} qps={row['qps']:7.1f} cpu={row['server_cpu_cores']:4.2f}",
                    flush=True,
                )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    base = {r["concurrency"]: r["qps"] for r in rows if r["target"] == "flask-default"}
    print(
        f"\n{'target':<22} {'conc':>4} {'qps':>8} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu':>5} {'x flask-default':>15}"
    )
    for r in rows:
        ref = base.get(r["concurrency"])
        ratio = f"{r['qps'] / ref:.2f}" if ref else "-"
        conc = "-" if r["concurrency"] is None else str(r["concurrency"])
        lat = [f"{r[k]:8.1f}" if k in r else f"{'-':>8}" for k in ("mean_ms", "p50_ms", "p99_ms")]
        print(
            f"{r['target']:<22} {conc:>4} {r['qps']:8.1f} {' '.join(lat)} "
            f"{r['server_cpu_cores']:5.2f} {ratio:>15}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--targets", default="flask-default,flask-1thread,loop")
    ap.add_argument("--loop-threads", type=int, default=1, help="torch threads for (d)")
    args = ap.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name in args.targets.split(","):
        print(f"{name}:", flush=True)
        if name == "loop":
            rows.extend(measure_loop(args.seconds, args.loop_threads))
            continue
        with TARGETS[name]() as target:
            rows.extend(measure_target(target, concurrency, args.seconds))
    print_table(rows)
    out = RESULTS / "serving_baselines.json"
    meta = {"seconds": args.seconds, "sentences": len(SENTENCES), "cpus": os.cpu_count()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
