"""Workflows: run DAGs of tasks through the scheduler.

The pieces, from the inside out:

- :mod:`~open_autoglm.workflows.engine` — :class:`WorkflowRun`, a pure state machine (events
  in, instructions out; no I/O, no clock), with :mod:`.protocol` (the events and
  instructions), :mod:`.step_state` (states and their transition tables) and :mod:`.plan`
  (a step compiled once per run).
- :mod:`~open_autoglm.workflows.service` — :class:`WorkflowService`, the platform adapter:
  steps become tasks submitted through the scheduler, run state is persisted after each
  change, unfinished runs are resumed at startup, callbacks are delivered and recorded.
- :mod:`.local_runner` (in-process driver for tests and benchmarks), :mod:`.callbacks`
  (HMAC signing and delivery), :mod:`.graph` (the DAG as a PNG).

The spec, its validation and the expression language live in :mod:`open_autoglm.spec`
(``spec.workflow``, ``spec.expressions``, ``spec.templates``). Names below are imported
lazily so that ``import open_autoglm.workflows`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from open_autoglm.workflows.engine import WorkflowRun
    from open_autoglm.workflows.local_runner import LocalRunner
    from open_autoglm.workflows.protocol import RunStatus, StepState
    from open_autoglm.workflows.service import WorkflowService

__all__ = ["LocalRunner", "RunStatus", "StepState", "WorkflowRun", "WorkflowService"]

_WHERE = {
    "WorkflowRun": "open_autoglm.workflows.engine",
    "LocalRunner": "open_autoglm.workflows.local_runner",
    "RunStatus": "open_autoglm.workflows.protocol",
    "StepState": "open_autoglm.workflows.protocol",
    "WorkflowService": "open_autoglm.workflows.service",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
