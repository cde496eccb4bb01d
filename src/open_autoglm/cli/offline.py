"""The server's own validators, for the CLI's offline ``validate`` verbs.

An offline check that reimplements the server's can only drift from it (a workflow the CLI
called valid was rejected by the server). Instead the CLI builds the app exactly as
``autoglm serve`` does, from the same settings and plugins, never starts it, and calls the
services the routes call.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from open_autoglm.runtime import Runtime
from open_autoglm.spec.workflow import WorkflowSpec

__all__ = ["offline_runtime", "validate_ruleset", "validate_workflow"]


@contextmanager
def offline_runtime() -> Iterator[Runtime]:
    """A runtime composed like the server's (settings from the environment and config file,
    plugins discovered), on a throwaway data directory, never started."""
    from open_autoglm.api.app import create_app
    from open_autoglm.config import load_settings

    with tempfile.TemporaryDirectory(prefix="autoglm-validate-") as tmp:
        runtime = Runtime(load_settings(data_dir=Path(tmp)))
        runtime.discover_plugins()
        create_app(runtime=runtime)  # runs every area's setup: the services the routes use
        try:
            yield runtime
        finally:
            runtime.storage.engine.dispose()  # never opened: no writer to stop


def validate_workflow(doc: Mapping[str, Any] | str) -> WorkflowSpec:
    """What ``POST /v1/workflows/validate`` runs; raises ``ValidationError``."""
    from open_autoglm.workflows.service import WorkflowService

    with offline_runtime() as runtime:
        service: WorkflowService = runtime.services["workflows"]
        return service.validate(doc)


def validate_ruleset(source: Mapping[str, Any]) -> int:
    """What ``PUT /v1/rulesets/{name}`` runs; returns the number of rules."""
    from open_autoglm.rules.catalog import RulesetCatalog

    with offline_runtime() as runtime:
        catalog: RulesetCatalog = runtime.services["rulesets"]
        _, rules = catalog.validate(source)
        return len(rules)
