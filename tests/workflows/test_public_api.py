"""Every name in ``__all__`` exists, and importing the workflow modules has no side effects."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

MODULES = [
    "open_autoglm.spec.workflow",
    "open_autoglm.spec.workflow_model",
    "open_autoglm.workflows.callbacks",
    "open_autoglm.workflows.engine",
    "open_autoglm.spec.expression_functions",
    "open_autoglm.spec.expressions",
    "open_autoglm.workflows.graph",
    "open_autoglm.workflows.local_runner",
    "open_autoglm.workflows.plan",
    "open_autoglm.workflows.protocol",
    "open_autoglm.workflows.step_state",
    "open_autoglm.spec.templates",
    "open_autoglm.cli.workflow",
]


# The platform adapter and its views need storage (sqlalchemy): checked for names only.
PLATFORM_MODULES = [
    "open_autoglm.workflows",
    "open_autoglm.workflows.run_view",
    "open_autoglm.workflows.service",
    "open_autoglm.storage.workflows_repo",
    "open_autoglm.api.routes.workflows",
]


@pytest.mark.parametrize("name", MODULES + PLATFORM_MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__, name
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []


def test_imports_pull_in_neither_torch_nor_matplotlib() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "print(sorted(m for m in ('torch', 'matplotlib', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
