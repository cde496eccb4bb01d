"""Shared helpers for the rule-engine benchmarks: timing, CLIPS and experta runners, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
EXPERTA_VENV = ROOT / ".bench-venvs" / "experta"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def experta_python() -> Path | None:
    """Return the experta venv's python, creating the venv on first use (None if impossible)."""
    py = EXPERTA_VENV / "bin" / "python"
    if not py.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(EXPERTA_VENV)], check=True)
            subprocess.run(
                [str(py), "-m", "pip", "install", "-q", "experta", "frozendict<2"],
                check=True,
                timeout=600,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"experta unavailable: {exc}", file=sys.stderr)
            return None
    probe = "import collections, collections.abc; collections.Mapping = collections.abc.Mapping; import experta"
    ok = subprocess.run([str(py), "-c", probe], capture_output=True)
    return py if ok.returncode == 0 else None


def run_experta(script: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Run ``script`` (a file next to this one) in the experta venv; it prints one JSON line."""
    py = experta_python()
    if py is None:
        return None
    proc = subprocess.run(
        [str(py), str(Path(__file__).with_name(script))],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(h)), *(len(_fmt(r[i])) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(_fmt(v).ljust(w) for v, w in zip(r, widths, strict=True)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "-" if v is None else str(v)


def write_results(name: str, data: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path
