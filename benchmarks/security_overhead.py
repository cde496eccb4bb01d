"""What the security middleware costs per request: security headers, the cross-origin guard,
API-key authentication and the JSON-only check, around an endpoint that does nothing.

    python benchmarks/security_overhead.py [--requests 20000] [--rounds 5]

Calls the ASGI stack in-process (no sockets, no server) and measures this process's CPU
time, so the figure is the middleware's own CPU per request. The anchor, measured in the same run: the bare endpoint. Three stacks:
no keys (the local default), a static key, and a managed key (a SHA-256 and a constant-time
compare per request). The best of ``--rounds`` is kept (the least disturbed by other load).

Prints a table and writes ``benchmarks/results/security_overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from starlette.types import ASGIApp, Receive, Scope, Send

from open_autoglm.api.auth import AuthMiddleware, KeyRing
from open_autoglm.api.browser import CrossOriginGuard, JsonOnlyMiddleware, SecurityHeadersMiddleware
from open_autoglm.storage.api_keys import ApiKeyRepo
from open_autoglm.storage.engine import create_storage_engine, migrate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
console = Console()

BODY = b'{"task_type": "echo", "input": "ping"}'


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def stack(ring: KeyRing) -> ASGIApp:
    """The order ``create_app`` uses, without rate limits, body bound and routing."""
    inner = JsonOnlyMiddleware(endpoint, raw_body_routes={("POST", "/v1/artifacts")})
    return SecurityHeadersMiddleware(CrossOriginGuard(AuthMiddleware(inner, ring)))


def scope_for(key: str | None) -> Scope:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ]
    if key:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/infer",
        "root_path": "",
        "scheme": "http",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
    }


async def per_request_us(app: ASGIApp, key: str | None, n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            assert msg["status"] == 200, msg

    # CPU time of this process: on a shared machine, wall time counts others' time slices.
    t0 = time.process_time()
    for _ in range(n):
        await app(scope_for(key), receive, send)  # a fresh scope, as every request has
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_storage_engine(f"sqlite:///{Path(tmp) / 'keys.db'}")
        migrate(engine)
        repo = ApiKeyRepo(engine)
        open_ring = KeyRing(ApiKeyRepo(create_storage_engine(f"sqlite:///{Path(tmp) / 'o.db'}")))
        migrate(open_ring.repo.engine)  # type: ignore[union-attr]
        static_ring = KeyRing(None, ["a-static-admin-key"])
        _, managed = repo.create("alice", ["read", "submit"])
        managed_ring = KeyRing(repo)
        for ring in (open_ring, managed_ring):
            ring.reload()
        cases = {
            "endpoint alone (anchor)": (endpoint, None),
            "middleware, no keys": (stack(open_ring), None),
            "middleware, static key": (stack(static_ring), "a-static-admin-key"),
            "middleware, managed key": (stack(managed_ring), managed),
        }
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, (app, key) in cases.items():
                us = asyncio.run(per_request_us(app, key, args.requests))
                best[name] = min(best.get(name, float("inf")), us)
        engine.dispose()
    anchor = best["endpoint alone (anchor)"]
    table = Table("stack", "µs / request", "added µs", "x anchor")
    rows = []
    for name, us in best.items():
        rows.append(
            {"stack": name, "us_per_request": round(us, 2), "added_us": round(us - anchor, 2)}
        )
        table.add_row(name, f"{us:.2f}", f"{us - anchor:.2f}", f"{us / anchor:.2f}")
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"requests": args.requests, "rounds": args.rounds, "results": rows}
    (RESULTS / "security_overhead.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
