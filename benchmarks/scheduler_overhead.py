"""Scheduler overhead: echo jobs through the whole durable path, in-process, and on Celery.

    python benchmarks/scheduler_overhead.py [--jobs 20000] [--concurrency 64] [--quick]

(a) durable jobs over HTTP: a real server process (SQLite WAL), a load process posting
    ``echo`` jobs on keep-alive connections; jobs/s = accepted jobs / time until all of them
    are terminal in storage (HTTP -> DB -> scheduler -> executor -> DB). Once with one job
    per request (the target's measure), once with ``POST /v1/tasks/batch`` of 100.
(b) in-process: ``Runtime.submit`` (durable, same storage) for the same number of jobs.
(c) baseline in the same run: Celery 5 + Redis (acks_late, appendonly) with 2 prefork
    workers, the same echo, results through the Redis backend. Installed into
    ``.bench-venvs/celery`` on first use.

Prints a table and writes ``benchmarks/results/scheduler_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import httpx
from rich.console import Console
from rich.table import Table

from helpers.services import ServerProcess, redis_server

RESULTS = ROOT / "benchmarks" / "results"
console = Console()


def bench_http(jobs: int, concurrency: int, batch: int = 1) -> dict:
    """``batch`` > 1: each request is ``POST /v1/tasks/batch`` with that many jobs."""
    if batch > 1:
        path = "/v1/tasks/batch"
        body = json.dumps({"tasks": [{"task_type": "echo", "input": "ping"}] * batch})
    else:
        path, body = "/v1/tasks", '{"task_type": "echo", "input": "ping"}'
    requests = max(1, jobs // batch)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", env={"AUTOGLM_EXECUTOR__THREADS": "4"}).start()
        try:
            t0 = time.perf_counter()
            load = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "httpload.py"),
                    server.url + path,
                    "--concurrency",
                    str(min(concurrency, requests)),
                    "--requests",
                    str(requests),
                    "--body",
                    body,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            stats = json.loads(load.stdout)
            accepted = stats["statuses"].get("202", 0) * batch
            while True:
                counts = httpx.get(server.url + "/readyz", timeout=10).json()["tasks"]
                if counts.get("succeeded", 0) >= accepted:
                    break
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
        finally:
            server.stop()
    return {
        "system": "open-autoglm HTTP durable"
        + (f", batches of {batch}" if batch > 1 else ", one job per request"),
        "jobs": accepted,
        "seconds": elapsed,
        "jobs_per_s": accepted / elapsed,
        "submit_qps": stats["qps"],
        "submit_p50_ms": stats["p50_ms"],
        "submit_p99_ms": stats["p99_ms"],
        "errors": stats["errors"],
    }


def bench_inprocess(jobs: int) -> list[dict]:
    rows: list[dict] = []
    from open_autoglm.config import load_settings
    from open_autoglm.runtime import Runtime

    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(load_settings(data_dir=Path(tmp), executor={"threads": 4})).start()
        try:
            rt.run({"task_type": "echo", "input": 0}, timeout=10)  # warm up
            for durable in (True, False):
                t0 = time.perf_counter()
                done = [
                    rt.submit_tracked({"task_type": "echo", "input": i}, durable=durable)
                    for i in range(jobs)
                ]
                for fut in done:
                    fut.result(120)
                elapsed = time.perf_counter() - t0
                kind = "durable" if durable else "online (durable=False)"
                rows.append(
                    {
                        "system": f"open-autoglm in-process {kind}",
                        "jobs": jobs,
                        "seconds": elapsed,
                        "jobs_per_s": jobs / elapsed,
                    }
                )
        finally:
            rt.stop()
    return rows


CELERY_APP = textwrap.dedent(
    """
    import os
    from celery import Celery
    app = Celery("bench", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=8, result_expires=600,
                    broker_connection_retry_on_startup=True)

    @app.task
    def echo(x):
        return x
    """
)

CELERY_CLIENT = textwrap.dedent(
    """
    import json, sys, time
    from benchtasks import echo
    n = int(sys.argv[1])
    echo.delay(0).get(timeout=60)  # warm up
    t0 = time.perf_counter()
    results = [echo.delay(i) for i in range(n)]
    for r in results:
        r.get(timeout=300)
    print(json.dumps({"seconds": time.perf_counter() - t0}))
    """
)


def _celery_python() -> Path | None:
    venv = ROOT / ".bench-venvs" / "celery"
    py = venv / "bin" / "python"
    if not py.exists():
        console.print("installing Celery + redis into .bench-venvs/celery ...")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        r = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "celery[redis]>=5,<6"],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            console.print(f"[yellow]Celery could not be installed: {r.stderr[-500:]}[/yellow]")
            return None
    return py


def bench_celery(jobs: int) -> dict | None:
    py = _celery_python()
    if py is None:
        return None
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "benchtasks.py").write_text(CELERY_APP)
        Path(tmp, "client.py").write_text(CELERY_CLIENT)
        env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": tmp}
        worker = subprocess.Popen(
            [
                str(py),
                "-m",
                "celery",
                "-A",
                "benchtasks",
                "worker",
                "--concurrency",
                "2",
                "--pool",
                "prefork",
                "--loglevel",
                "warning",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            out = subprocess.run(
                [str(py), "client.py", str(jobs)],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if out.returncode != 0:
                console.print(f"[yellow]Celery client failed: {out.stderr[-800:]}[/yellow]")
                return None
            seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        finally:
            worker.terminate()
            worker.wait(20)
    return {
        "system": "Celery 5 + Redis (acks_late, AOF)",
        "jobs": jobs,
        "seconds": seconds,
        "jobs_per_s": jobs / seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="fewer jobs (smoke run)")
    args = ap.parse_args()
    jobs = 2000 if args.quick else args.jobs

    rows = [
        bench_http(jobs, args.concurrency),
        bench_http(jobs, 8, batch=100),
        *bench_inprocess(jobs),
    ]
    celery = bench_celery(jobs)
    if celery:
        rows.append(celery)
    base = celery["jobs_per_s"] if celery else None

    table = Table(title=f"echo jobs, {jobs} per system, {os.cpu_count()} cores")
    for col in ("system", "jobs/s", "overhead/job", "vs Celery", "notes"):
        table.add_column(col)
    for r in rows:
        notes = ""
        if "submit_qps" in r:
            notes = f"submit {r['submit_qps']:.0f} req/s, p50 {r['submit_p50_ms']:.1f} ms, p99 {r['submit_p99_ms']:.1f} ms, errors {r['errors']}"
        ratio = f"{r['jobs_per_s'] / base:.2f}x" if base else "n/a"
        r["vs_celery"] = r["jobs_per_s"] / base if base else None
        table.add_row(
            r["system"], f"{r['jobs_per_s']:.0f}", f"{1e6 / r['jobs_per_s']:.0f} µs", ratio, notes
        )
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "scheduler_overhead.json"
    out.write_text(
        json.dumps({"jobs": jobs, "concurrency": args.concurrency, "rows": rows}, indent=2)
    )
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
