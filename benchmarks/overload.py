"""Overload: twice the configured rate limit, then the same with 500 slow-header connections.

A real server (``autoglm serve``) runs with a per-client rate limit of ``--rate`` requests/s.
An open-loop generator (requests sent on a fixed schedule, whatever the answers) posts
``/v1/infer`` echo tasks from 127.0.0.1:

1. unloaded: ``--rate / 2``, then ``0.9 * --rate`` (the latency anchor: the admitted
   traffic of an overload run without its excess), ``--baseline`` s each;
2. overload: ``2 * --rate`` for ``--duration`` s;
3. overload + slowloris: the same while 500 connections send a request head a byte every
   2 s (each is cut at ``api.lifecycle.header_timeout_s`` and reopened at once, so 500 stay
   open all the time).

Targets per overload run: admitted (2xx) rate within 5% of the limit, p99 latency of the
admitted requests within 2x the p99 just under the limit, server RSS growth under 5% over
the run.
Latency counts from each request's scheduled send time (no coordinated omission).
The per-client connection cap is raised to 1,024 so the 500 slow connections are all open
at once (the default, 64, would refuse most of them with 429 before they cost anything).

    flock /tmp/autoglm-bench.lock python benchmarks/overload.py

Prints a table and writes ``benchmarks/results/overload.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.loadgen import _one
from helpers.services import ServerProcess

BODY = b'{"task_type": "echo", "input": "overload"}'
SLOW_CONNECTIONS = 500
HEADER_TIMEOUT_S = 10.0


def _rss(pid: int) -> int:
    """Resident bytes of the server and its children (replicas, if any)."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return int(total)


async def _open_loop(port: int, rate: float, duration: float) -> dict[str, Any]:
    """Send at ``rate``/s for ``duration`` s on a pool of keep-alive connections."""
    head = (
        f"POST /v1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    idle: list[list[Any]] = []
    statuses: dict[str, int] = {}
    admitted: list[float] = []
    refused: list[float] = []
    loop = asyncio.get_running_loop()

    async def one(scheduled: float) -> None:
        status, keep = 0, False
        for conn in (idle.pop(), []) if idle else ([],):
            # A pooled connection the server closed as idle (keep-alive timeout) fails before
            # any answer: the request never arrived, send it once more on a fresh one.
            try:
                status, keep = await _one(conn, "127.0.0.1", port, head, BODY)
                break
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                if conn:
                    conn[1].close()
                conn = []
        latency = loop.time() - scheduled
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        (admitted if 200 <= status < 300 else refused).append(latency)
        if keep and conn:
            idle.append(conn)
        elif conn:
            conn[1].close()

    n = int(rate * duration)
    start = loop.time()
    tasks = []
    for i in range(n):
        at = start + i / rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(at)))
    await asyncio.gather(*tasks)
    elapsed = duration  # the schedule's span: admitted/elapsed is the admitted rate
    for conn in idle:
        conn[1].close()
    admitted.sort()
    k = len(admitted)
    return {
        "offered_per_s": rate,
        "seconds": elapsed,
        "sent": n,
        "admitted": k,
        "admitted_per_s": k / elapsed,
        "statuses": statuses,
        "p50_ms": admitted[k // 2] * 1000 if k else None,
        "p99_ms": admitted[min(k - 1, int(k * 0.99))] * 1000 if k else None,
        "mean_ms": statistics.fmean(admitted) * 1000 if k else None,
        "refused_p99_ms": sorted(refused)[int(len(refused) * 0.99)] * 1000 if refused else None,
    }


async def _slowloris(port: int, n: int, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Keep ``n`` connections open, each sending a request head one byte every 2 s.

    Their first opening is spread over one header timeout, so that the server's cuts (and
    the reopenings) are spread too and ``n`` stay open at any moment.
    """

    async def one(i: int) -> None:
        await asyncio.sleep(HEADER_TIMEOUT_S * i / n)
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                counts["connect_errors"] += 1
                await asyncio.sleep(0.5)
                continue
            counts["opened"] += 1
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            try:
                while not stop.is_set():
                    writer.write(b"X")  # a header name that never ends
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(1024), timeout=2.0) == b"":
                            break
                        counts["answered"] += 1  # 408 (or 429), then the server closes
            except OSError:
                pass
            finally:
                counts["closed"] += 1
                writer.close()

    await asyncio.gather(*(one(i) for i in range(n)))


def _slowloris_process(port: int, n: int, seconds: float, out: Any) -> None:
    """Run :func:`_slowloris` for ``seconds`` in this (separate) process; counts to ``out``."""

    async def run() -> dict[str, int]:
        stop = asyncio.Event()
        counts = {"opened": 0, "answered": 0, "closed": 0, "connect_errors": 0}
        task = asyncio.ensure_future(_slowloris(port, n, stop, counts))
        await asyncio.sleep(seconds)
        stop.set()
        await task
        return counts

    out.put(asyncio.run(run()))


async def _run(port: int, rate: float, duration: float, pid: int, slow: int) -> dict[str, Any]:
    loris = None
    if slow:
        # In a process of its own: 500 connections' timers must not delay the measuring loop.
        ctx = multiprocessing.get_context("spawn")
        counts = ctx.Queue()
        warm = HEADER_TIMEOUT_S + 1  # all of them open before the load starts
        loris = ctx.Process(target=_slowloris_process, args=(port, slow, warm + duration, counts))
        loris.start()
        await asyncio.sleep(warm)
    rss_before = _rss(pid)
    stats = await _open_loop(port, rate, duration)
    stats["rss_before_mb"] = rss_before / 2**20
    stats["rss_after_mb"] = _rss(pid) / 2**20
    stats["rss_growth"] = stats["rss_after_mb"] / stats["rss_before_mb"] - 1
    stats["server_connections"] = len(psutil.Process(pid).net_connections(kind="tcp"))
    if loris is not None:
        stats["slow_connections"] = {"target": slow, **counts.get(timeout=60)}
        loris.join(30)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="configured limit, requests/s")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per overload run")
    parser.add_argument("--baseline", type=float, default=15.0, help="seconds of unloaded run")
    args = parser.parse_args()
    rate = args.rate
    env = {
        "AUTOGLM_API__RATE_LIMIT__PER_S": str(rate),
        "AUTOGLM_API__RATE_LIMIT__BURST": "20",
        "AUTOGLM_API__LIFECYCLE__MAX_CONNECTIONS_PER_CLIENT": "1024",
        "AUTOGLM_API__LIFECYCLE__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", env=env).start()
        try:
            assert server.proc is not None
            pid = server.proc.pid
            asyncio.run(_open_loop(server.port, rate / 2, 3))  # warm-up, not counted
            time.sleep(1.5)  # the bucket refills
            unloaded = asyncio.run(_run(server.port, rate / 2, args.baseline, pid, 0))
            time.sleep(1.5)
            at_limit = asyncio.run(_run(server.port, 0.9 * rate, args.baseline, pid, 0))
            time.sleep(1.5)
            overload = asyncio.run(_run(server.port, 2 * rate, args.duration, pid, 0))
            time.sleep(1.5)
            slow = asyncio.run(_run(server.port, 2 * rate, args.duration, pid, SLOW_CONNECTIONS))
        finally:
            server.stop()

    # The latency anchor: the same admitted traffic without the excess (just under the limit,
    # so the bucket refuses nothing); the half-rate run is reported beside it.
    anchor = at_limit["p99_ms"]
    runs = {
        "unloaded (0.5x)": unloaded,
        "at limit (0.9x)": at_limit,
        "overload": overload,
        "overload+slowloris": slow,
    }
    targets = {}
    for name in ("overload", "overload+slowloris"):
        r = runs[name]
        r["admitted_vs_limit"] = r["admitted_per_s"] / rate - 1
        r["p99_vs_unloaded"] = r["p99_ms"] / anchor if anchor else None
        r["p99_vs_half_rate"] = r["p99_ms"] / unloaded["p99_ms"]
        targets[name] = {
            "admitted_within_5pct": abs(r["admitted_vs_limit"]) <= 0.05,
            "p99_within_2x": r["p99_vs_unloaded"] is not None and r["p99_vs_unloaded"] <= 2.0,
            "rss_growth_under_5pct": r["rss_growth"] < 0.05,
            "no_errors": r["statuses"].get("0", 0) == 0
            and all(c in ("200", "429") for c in r["statuses"]),
        }

    print(f"\nOverload, limit {rate:g} requests/s per client (burst 20), POST /v1/infer echo")
    print(
        f"{'run':<20} {'offered/s':>9} {'admitted/s':>10} {'vs limit':>8} {'p99 ms':>8} "
        f"{'p99 x':>6} {'RSS MB':>8} {'RSS +':>7} {'statuses'}"
    )
    for name, r in runs.items():
        vs = f"{r['admitted_vs_limit']:+.1%}" if "admitted_vs_limit" in r else "-"
        x = f"{r['p99_ms'] / anchor:.2f}"
        print(
            f"{name:<20} {r['offered_per_s']:>9.0f} {r['admitted_per_s']:>10.1f} {vs:>8} "
            f"{r['p99_ms']:>8.1f} {x:>6} {r['rss_after_mb']:>8.1f} {r['rss_growth']:>+7.1%} "
            f"{r['statuses']}"
        )
    if "slow_connections" in slow:
        print(f"slow-header connections: {slow['slow_connections']}")
    for name, t in targets.items():
        print(f"{name}: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in t.items()))

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "overload.json"
    out.write_text(
        json.dumps(
            {
                "rate_limit_per_s": rate,
                "burst": 20,
                "duration_s": args.duration,
                "slow_connections": SLOW_CONNECTIONS,
                "header_timeout_s": HEADER_TIMEOUT_S,
                "python": platform.python_version(),
                "runs": runs,
                "targets": targets,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
