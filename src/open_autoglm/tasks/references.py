"""Check, at submit time, that what a task names exists: its models and the artifacts it reads.

A task that names an unregistered model or a missing artifact can only fail once it runs; the
server knows the answer when the task arrives, so it refuses it then (404 for a name that is
not there, 422 for an id that cannot be one), naming the field, instead of accepting it with a
202 that turns into a failure later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from open_autoglm.errors import NotFoundError, ValidationError
from open_autoglm.spec.task import TaskSpec
from open_autoglm.tasks.base import TaskType

__all__ = ["artifact_references", "check_references"]


def artifact_references(spec: TaskSpec, ttype: TaskType) -> list[tuple[list[str | int], Any]]:
    """``(loc, id)`` of every artifact the task reads: an ``{"artifact": id}`` input, and the
    params its type declares in ``artifact_params``."""
    refs: list[tuple[list[str | int], Any]] = []
    if isinstance(spec.input, dict) and set(spec.input) == {"artifact"}:
        refs.append((["input", "artifact"], spec.input["artifact"]))
    params = spec.params if isinstance(spec.params, dict) else {}
    for name in ttype.artifact_params:
        if params.get(name) is not None:
            refs.append((["params", name], params[name]))
    return refs


def check_references(
    spec: TaskSpec,
    ttype: TaskType,
    *,
    model_exists: Callable[[str], bool] | None,
    artifact_exists: Callable[[str], bool],
) -> None:
    """Raise ``NotFoundError`` naming each reference that does not resolve (``ValidationError``
    when one is not even a well-formed id).

    ``model_exists`` is None when the server has no model registry to ask.
    """
    problems: list[dict[str, Any]] = []
    malformed: list[dict[str, Any]] = []
    params = spec.params if isinstance(spec.params, dict) else {}
    named: list[tuple[list[str | int], Any]] = []
    if ttype.requires_model or ttype.names_model:
        named.append((["model"], spec.model))
    named += [(["params", p], params.get(p)) for p in ttype.model_params]
    for loc, name in named:
        if isinstance(name, str) and name and model_exists is not None and not model_exists(name):
            msg = f"model {name!r} is not registered (see GET /v1/models/registry)"
            problems.append({"loc": loc, "msg": msg})
    for loc, ref in artifact_references(spec, ttype):
        if not isinstance(ref, str) or not ref.strip():
            malformed.append({"loc": loc, "msg": "artifact id must be a non-empty string"})
        elif not artifact_exists(ref):
            problems.append({"loc": loc, "msg": f"artifact {ref!r} not found"})
    if malformed:
        raise ValidationError(_summary(malformed), details=malformed + problems)
    if problems:
        raise NotFoundError(_summary(problems), details=problems)


def _summary(problems: list[dict[str, Any]]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return str(problems[0]["msg"]) + more
