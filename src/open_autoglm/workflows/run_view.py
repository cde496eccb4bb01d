"""What the API shows of a run: built from the stored engine state, with no secrets in it.

Pure functions over JSON data (a ``workflow_runs`` row and its ``workflow_step_tasks``
rows), so the view is the same whether the run is live in this process, on another replica,
or long finished.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["describe_run", "instance_states", "redact_spec", "summarize_run"]


def redact_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec without any ``callback_secret`` (nested workflows included)."""
    out = {k: v for k, v in spec.items() if k != "callback_secret"}
    if isinstance(out.get("steps"), list):
        out["steps"] = [
            {**s, "workflow": redact_spec(s["workflow"])}
            if isinstance(s, Mapping) and isinstance(s.get("workflow"), Mapping)
            else s
            for s in out["steps"]
        ]
    return out


def summarize_run(row: Mapping[str, Any]) -> dict[str, Any]:
    """A run without its steps (the list route's shape)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "error": row["error"],
        "inputs": row["inputs"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "finished_at": row["finished_at"],
    }


def describe_run(
    row: Mapping[str, Any], step_tasks: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The whole run: every step with its status, attempts, task ids, output or error."""
    tasks: dict[str, list[dict[str, Any]]] = {}
    for t in step_tasks or []:
        tasks.setdefault(t["step_id"], []).append(
            {"attempt": t["attempt"], "task_id": t["task_id"]}
        )
    state = row["state"]
    return {
        **summarize_run(row),
        "outputs": state.get("outputs", {}),
        "spec": redact_spec(row["spec"]),
        "steps": _steps(state, tasks),
    }


def _steps(state: Mapping[str, Any], tasks: Mapping[str, list[dict[str, Any]]]) -> list[Any]:
    prefix = state.get("prefix", "")
    out = []
    for name, rec in state["steps"].items():
        status = rec["state"]
        instances = []
        for inst in rec["instances"]:
            sid = prefix + inst["id"]
            history = tasks.get(sid, [])
            view: dict[str, Any] = {
                "id": sid,
                "index": inst["index"],
                "status": inst["state"],
                "attempts": inst["attempt"],
                "task_id": history[-1]["task_id"] if history else None,
                "tasks": history,
                "output": inst["output"],
                "error": inst["error"],
            }
            if inst["child"] is not None:
                view["run"] = {
                    "status": inst["child"]["status"],
                    "error": inst["child"]["error"],
                    "outputs": inst["child"]["outputs"],
                    "steps": _steps(inst["child"], tasks),
                }
            instances.append(view)
        step: dict[str, Any] = {
            "name": name,
            "id": prefix + name,
            "status": status,
            "attempts": sum(i["attempts"] for i in instances),
            "output": rec["output"],
            "error": rec["reason"] if status in ("failed", "timed_out", "cancelled") else None,
            "skip_reason": rec["reason"] if status == "skipped" else None,
            "instances": instances,
        }
        if len(instances) == 1 and instances[0]["index"] is None:
            step["task_id"] = instances[0]["task_id"]
        out.append(step)
    return out


def instance_states(state: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every step and step instance, nested runs included: ``(key, kind, data)``.

    ``kind`` is ``"step"`` (a step as a whole) or ``"instance"`` (one runnable unit); the
    service diffs two walks to publish what changed.
    """
    prefix = state.get("prefix", "")
    for name, rec in state["steps"].items():
        yield (
            "step:" + prefix + name,
            "step",
            {"step": prefix + name, "status": rec["state"], "reason": rec["reason"]},
        )
        for inst in rec["instances"]:
            sid = prefix + inst["id"]
            yield (
                "instance:" + sid,
                "instance",
                {
                    "step_id": sid,
                    "status": inst["state"],
                    "attempt": inst["attempt"],
                    "error": inst["error"],
                },
            )
            if inst["child"] is not None:
                yield from instance_states(inst["child"])
