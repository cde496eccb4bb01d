"""Workflow engine overhead per step: a 1,000-step chain and a 500-way fan-out.

    python benchmarks/workflows.py [--chain 1000] [--fanout 500] [--repeat 3] [--no-prefect]
        [--platform-chain 200] [--platform-fanout 200]

Every step is a no-op (``run_task`` returns its input), so the time is the engine's own
cost plus the driver's:

(a) engine only: events fed straight into ``WorkflowRun`` (no threads, no queue);
    includes resolving each step's ``${steps.prev.output}`` reference.
(b) ``LocalRunner`` inline (``max_workers=0``) and (c) with 8 threads: the in-process path.
(e) platform: ``WorkflowService`` on an in-process ``Runtime`` (SQLite in a temp dir, real
    scheduler, ``echo`` tasks): every step is a durable task, the run state is committed
    after each batch of events. Smaller sizes by default (``--platform-chain/-fanout``).
(d) baseline: Prefect 3 in ``.bench-venvs/prefect`` (created on first use with pip), the same
    chain (sequential task calls in a flow) and fan-out (``task.map``), run offline on its
    ephemeral local server. If Prefect cannot be installed or run, the table says so.

Spec validation (cycle check, reference scopes) is timed separately: it runs once at submit.
Prints a table and writes ``benchmarks/results/workflows.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PREFECT_VENV = ROOT / ".bench-venvs" / "prefect"

from open_autoglm.spec.workflow import WorkflowSpec, validate_workflow
from open_autoglm.workflows.engine import WorkflowRun
from open_autoglm.workflows.local_runner import LocalRunner
from open_autoglm.workflows.protocol import (
    Instruction,
    RunFinished,
    RunStatus,
    StepSucceeded,
    SubmitStep,
)


def chain_doc(n: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"name": "s0", "task": {"task_type": "echo", "input": 0}}]
    for i in range(1, n):
        steps.append(
            {
                "name": f"s{i}",
                "depends_on": [f"s{i - 1}"],
                "task": {"task_type": "echo", "input": f"${{steps.s{i - 1}.output}}"},
            }
        )
    return {"name": "chain", "steps": steps}


def fanout_doc(n: int) -> dict[str, Any]:
    return {
        "name": "fanout",
        "inputs": {"items": {"type": "list"}},
        "steps": [
            {
                "name": "fan",
                "map": "inputs.items",
                "task": {"task_type": "echo", "input": "${item}"},
            },
            {
                "name": "gather",
                "depends_on": ["fan"],
                "task": {"task_type": "echo", "input": "${len(steps.fan.output)}"},
            },
        ],
    }


def drive_engine(spec: WorkflowSpec, inputs: dict[str, Any]) -> tuple[int, RunStatus]:
    """Feed success events straight back, no threads: the engine's cost alone."""
    run = WorkflowRun(spec, inputs)
    pending: list[Instruction] = run.start(0.0)
    steps = 0
    status = RunStatus.RUNNING
    while pending:
        ins = pending.pop()
        if isinstance(ins, SubmitStep):
            steps += 1
            pending += run.handle(
                StepSucceeded(ins.step_id, ins.task.get("input"), ins.attempt), 0.0
            )
        elif isinstance(ins, RunFinished):
            status = ins.status
    return steps, status


def best_of(repeat: int, fn: Any) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def bench_ours(
    name: str, doc: dict[str, Any], inputs: dict[str, Any], steps: int, repeat: int
) -> list[dict[str, Any]]:
    t_validate, spec = best_of(repeat, lambda: validate_workflow(doc, {"echo"}))
    rows = [
        {"case": name, "path": "validate (once per submit)", "steps": steps, "seconds": t_validate}
    ]
    t, (count, status) = best_of(repeat, lambda: drive_engine(spec, inputs))
    assert count == steps and status is RunStatus.SUCCEEDED, (count, status)
    rows.append({"case": name, "path": "engine only", "steps": steps, "seconds": t})
    for label, workers in (("LocalRunner inline", 0), ("LocalRunner 8 threads", 8)):
        runner = LocalRunner(lambda task: task.get("input"), max_workers=workers)
        t, result = best_of(repeat, lambda r=runner: r.run(spec, inputs))
        assert result.status is RunStatus.SUCCEEDED and len(result.submissions) == steps
        rows.append({"case": name, "path": label, "steps": steps, "seconds": t})
    return rows


def bench_platform(chain: int, fanout: int, repeat: int) -> list[dict[str, Any]]:
    """Steps as scheduler tasks through an in-process runtime (SQLite, durable)."""
    from open_autoglm.config import load_settings
    from open_autoglm.runtime import Runtime
    from open_autoglm.workflows.service import WorkflowService

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data", executor={"threads": 8})
        runtime = Runtime(settings)
        service = WorkflowService(runtime)
        runtime.on_start.append(service.start)
        runtime.on_stop.append(service.stop)
        with runtime:
            cases = [
                ("chain", chain_doc(chain), {}, chain),
                ("fan-out", fanout_doc(fanout), {"items": list(range(fanout))}, fanout + 1),
            ]
            for case, doc, inputs, steps in cases:
                spec = service.validate(doc)

                def once(spec: WorkflowSpec = spec, inputs: dict[str, Any] = inputs) -> str:
                    run = service.submit(spec, inputs).result(60)
                    final = service.wait(run["id"], timeout=600)
                    assert final["status"] == "succeeded", final["error"]
                    return str(final["id"])

                t, _ = best_of(repeat, once)
                rows.append(
                    {
                        "case": case,
                        "path": "platform (scheduler+SQLite)",
                        "steps": steps,
                        "seconds": t,
                    }
                )
    return rows


PREFECT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from prefect import flow, task

    @task
    def echo(x):
        return x

    @flow
    def chain(n):
        x = 0
        for _ in range(n):
            x = echo(x)
        return x

    @flow
    def fanout(n):
        futures = echo.map(list(range(n)))
        return len([f.result() for f in futures])

    @flow
    def warm():
        return echo(1)

    n_chain, n_fan = int(sys.argv[1]), int(sys.argv[2])
    warm()  # start the ephemeral server outside the timing
    out = {}
    t0 = time.perf_counter(); chain(n_chain); out["chain"] = time.perf_counter() - t0
    t0 = time.perf_counter(); fanout(n_fan); out["fanout"] = time.perf_counter() - t0
    print(json.dumps(out))
    """
)


def ensure_prefect() -> tuple[Path | None, str]:
    python = PREFECT_VENV / "bin" / "python"
    if not python.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(PREFECT_VENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "prefect>=3,<4"],
                check=True,
                timeout=900,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"could not install prefect: {exc}"
    probe = subprocess.run(
        [str(python), "-c", "import prefect; print(prefect.__version__)"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return None, "prefect is not importable: " + probe.stderr.strip().splitlines()[-1]
    return python, probe.stdout.strip()


def bench_prefect(n_chain: int, n_fan: int) -> dict[str, Any]:
    python, version = ensure_prefect()
    if python is None:
        return {"error": version}
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "PREFECT_HOME": home,
            "PREFECT_API_URL": "",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "ERROR",
            "PREFECT_LOGGING_TO_API_ENABLED": "false",
        }
        script = Path(home) / "bench_prefect.py"
        script.write_text(PREFECT_SCRIPT)
        try:
            out = subprocess.run(
                [str(python), str(script), str(n_chain), str(n_fan)],
                capture_output=True,
                text=True,
                env=env,
                timeout=1800,
            )
        except subprocess.TimeoutExpired:
            return {"error": "prefect run timed out after 30 min", "version": version}
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": "prefect run failed: " + " | ".join(tail), "version": version}
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {"version": version, **data}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-prefect", action="store_true")
    parser.add_argument("--platform-chain", type=int, default=200)
    parser.add_argument("--platform-fanout", type=int, default=200)
    args = parser.parse_args()

    rows = bench_ours("chain", chain_doc(args.chain), {}, args.chain, args.repeat)
    items = list(range(args.fanout))
    rows += bench_ours(
        "fan-out", fanout_doc(args.fanout), {"items": items}, args.fanout + 1, args.repeat
    )

    rows += bench_platform(args.platform_chain, args.platform_fanout, args.repeat)

    prefect: dict[str, Any] = {"error": "skipped (--no-prefect)"}
    if not args.no_prefect:
        prefect = bench_prefect(args.chain, args.fanout)
        if "error" not in prefect:
            rows.append(
                {
                    "case": "chain",
                    "path": f"Prefect {prefect['version']}",
                    "steps": args.chain,
                    "seconds": prefect["chain"],
                }
            )
            rows.append(
                {
                    "case": "fan-out",
                    "path": f"Prefect {prefect['version']}",
                    "steps": args.fanout,
                    "seconds": prefect["fanout"],
                }
            )
    for row in rows:
        row["ms_per_step"] = 1000 * row["seconds"] / row["steps"]

    print(
        f"\nworkflow overhead, no-op steps ({platform.processor() or platform.machine()}, {os.cpu_count()} cpus)"
    )
    print(f"{'case':<8} {'path':<28} {'steps':>6} {'total s':>9} {'ms/step':>9}")
    for r in rows:
        print(
            f"{r['case']:<8} {r['path']:<28} {r['steps']:>6} {r['seconds']:>9.3f} {r['ms_per_step']:>9.3f}"
        )
    ratios: dict[str, float] = {}
    if "error" in prefect:
        print(f"\nPrefect baseline: not measured — {prefect['error']}")
    else:
        for case in ("chain", "fan-out"):
            ours = next(
                r for r in rows if r["case"] == case and r["path"] == "LocalRunner 8 threads"
            )
            theirs = next(r for r in rows if r["case"] == case and r["path"].startswith("Prefect"))
            ratios[case] = theirs["ms_per_step"] / ours["ms_per_step"]
            print(f"Prefect / LocalRunner(8 threads), {case}: {ratios[case]:.1f}x slower per step")
            ours_platform = next(
                r for r in rows if r["case"] == case and r["path"].startswith("platform")
            )
            ratios[f"{case} platform"] = theirs["ms_per_step"] / ours_platform["ms_per_step"]
            print(
                f"Prefect / platform (durable, scheduled), {case}: "
                f"{ratios[f'{case} platform']:.2f}x per step"
            )
    target = all(r["ms_per_step"] <= 2.0 for r in rows if r["path"] == "engine only")
    print(f"engine-only target <= 2 ms/step: {'met' if target else 'MISSED'}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "workflows.json"
    out.write_text(
        json.dumps(
            {
                "chain": args.chain,
                "fanout": args.fanout,
                "platform_chain": args.platform_chain,
                "platform_fanout": args.platform_fanout,
                "rows": rows,
                "prefect": prefect,
                "ratios": ratios,
                "target_met": target,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
