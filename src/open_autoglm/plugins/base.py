"""The plugin seam: a plugin contributes task types, rule actions and lifecycle hooks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from open_autoglm.tasks.base import TaskType

__all__ = ["HOOK_NAMES", "Plugin", "RuleAction"]

# Rule actions are called as action(context, **arguments); see rules/ for the context.
RuleAction = Callable[..., Any]

# Lifecycle hooks a plugin may register; each is called with keyword arguments.
HOOK_NAMES = frozenset(
    {
        "on_startup",  # ()
        "on_shutdown",  # ()
        "on_task_submitted",  # (task: dict)
        "on_task_finished",  # (task: dict)  after a terminal state is stored
    }
)


class Plugin:
    """Base class for plugins. Override what you contribute.

    Subclasses set ``name`` and ``version``. ``initialize`` receives this plugin's section of
    the platform config (``[plugins.<name>]`` in the TOML file) and may raise to fail loading;
    the registry records the failure and its reason instead of crashing the server.
    """

    name: str = ""
    version: str = "0.0.0"

    def initialize(self, config: Mapping[str, Any]) -> None:
        """Prepare the plugin; ``config`` is its own config section."""

    def task_types(self) -> list[TaskType]:
        return []

    def rule_actions(self) -> dict[str, RuleAction]:
        return {}

    def hooks(self) -> dict[str, list[Callable[..., Any]]]:
        return {}
