"""Closed-loop HTTP/1.1 load from a separate process: raw asyncio, keep-alive connections.

Deliberately lean (no HTTP library) so the load generator costs the shared two cores as
little as possible. Usage::

    python benchmarks/httpload.py URL --concurrency 32 --requests 20000 --body '{"task_type": "echo"}'

Prints one JSON object: requests, errors, seconds, qps, mean/p50/p99 latency (ms), statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from urllib.parse import urlsplit

__all__ = ["run_load"]


async def _worker(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    counter: list[int],
    total: int,
    lat: list[float],
    statuses: dict[int, int],
    deadline: float,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while counter[0] < total and time.perf_counter() < deadline:
            i = counter[0]
            counter[0] += 1
            body = bodies[i % len(bodies)]
            head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            t0 = time.perf_counter()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            code = int(status_line.split()[1]) if status_line else 0
            statuses[code] = statuses.get(code, 0) + 1
    finally:
        writer.close()


async def run_load(
    url: str, bodies: list[bytes], concurrency: int, requests: int, duration: float = 3600.0
) -> dict[str, object]:
    parts = urlsplit(url)
    lat: list[float] = []
    statuses: dict[int, int] = {}
    counter = [0]
    t0 = time.perf_counter()
    deadline = t0 + duration
    await asyncio.gather(
        *(
            _worker(
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                parts.path or "/",
                bodies,
                counter,
                requests,
                lat,
                statuses,
                deadline,
            )
            for _ in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - t0
    lat.sort()
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    return {
        "requests": len(lat),
        "ok": ok,
        "errors": len(lat) - ok,
        "seconds": elapsed,
        "qps": len(lat) / elapsed if elapsed else 0.0,
        "mean_ms": statistics.fmean(lat) * 1000 if lat else 0.0,
        "p50_ms": lat[len(lat) // 2] * 1000 if lat else 0.0,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0,
        "statuses": statuses,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--body", action="append", required=True, help="JSON body; repeat for a mix")
    args = ap.parse_args()
    bodies = [b.encode() for b in args.body]
    print(
        json.dumps(
            asyncio.run(run_load(args.url, bodies, args.concurrency, args.requests, args.duration))
        )
    )


if __name__ == "__main__":
    main()
