"""Closed-loop HTTP load from a separate process, for comparing servers in one run.

    from benchmarks.loadgen import run_closed_loop
    stats = run_closed_loop("http://127.0.0.1:8000/predict", lambda i: {"text": S[i % len(S)]},
                            concurrency=32, duration=6.0)

Bodies are built here from ``body_factory(i)`` (so the factory may be a lambda), then a spawned
child process drives the load with raw asyncio HTTP/1.1 so the load generator never shares a
GIL with the caller or the server, and costs the shared cores little. Connections are kept
alive when the server allows it and reopened when it closes them (gunicorn's sync workers
close after every response). A short warm-up pass runs first and is not counted.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["run_closed_loop"]


async def _one(conn: list[Any], host: str, port: int, head: bytes, body: bytes) -> tuple[int, bool]:
    """Send one request on ``conn`` (opened if needed); return (status, server kept it open)."""
    if not conn:
        conn.extend(await asyncio.open_connection(host, port))
    reader, writer = conn
    writer.write(head + body)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("server closed the connection")
    length, close = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            length = int(line[15:])
        elif lower.startswith(b"connection:") and b"close" in lower:
            close = True
    await reader.readexactly(length)
    return int(status_line.split()[1]), not close


async def _load(url: str, bodies: list[bytes], concurrency: int, duration: float) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    heads = [
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(b)}\r\n\r\n".encode()
        for b in bodies
    ]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    counter = [0]
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        conn: list[Any] = []
        while time.perf_counter() < deadline:
            i = counter[0] % len(bodies)
            counter[0] += 1
            start = time.perf_counter()
            try:
                status, keep = await _one(conn, host, port, heads[i], bodies[i])
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                status, keep = 0, False
            latencies.append(time.perf_counter() - start)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if not keep and conn:
                conn[1].close()
                conn.clear()
        if conn:
            conn[1].close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))
    n = len(latencies)
    return {
        "requests": n,
        "ok": ok,
        "errors": n - ok,
        "seconds": elapsed,
        "qps": ok / elapsed if elapsed else 0.0,
        "mean_ms": statistics.fmean(latencies) * 1000 if n else 0.0,
        "p50_ms": latencies[n // 2] * 1000 if n else 0.0,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0,
        "statuses": statuses,
    }


def _drive(
    url: str, bodies: list[bytes], concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    if warmup > 0:
        asyncio.run(_load(url, bodies, concurrency, warmup))
    cpu = time.process_time()
    stats = asyncio.run(_load(url, bodies, concurrency, duration))
    # The load generator shares the cores with the server; what it takes, the server lacks.
    seconds = stats["seconds"]
    stats["client_cpu_cores"] = (time.process_time() - cpu) / seconds if seconds else 0.0
    return stats


def run_closed_loop(
    url: str,
    body_factory: Callable[[int], Any],
    *,
    concurrency: int,
    duration: float,
    n_bodies: int = 512,
    warmup: float = 1.0,
) -> dict[str, Any]:
    """Keep ``concurrency`` POSTs in flight for ``duration`` s; return qps (2xx only) and latency.

    Returns ``{"requests", "ok", "errors", "seconds", "qps", "mean_ms", "p50_ms", "p99_ms",
    "statuses", "client_cpu_cores", "concurrency"}``; ``client_cpu_cores`` is the load
    generator's own CPU seconds per wall second over the measured part.
    """
    bodies = [json.dumps(body_factory(i)).encode() for i in range(n_bodies)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        stats = pool.apply(_drive, (url, bodies, concurrency, duration, warmup))
    stats["concurrency"] = concurrency
    return stats
