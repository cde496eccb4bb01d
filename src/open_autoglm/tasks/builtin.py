"""The built-in plugins. They register exactly like third-party ones (entry points)."""

from __future__ import annotations

from open_autoglm import __version__
from open_autoglm.plugins.base import Plugin
from open_autoglm.tasks.base import TaskType

__all__ = ["BuiltinPlugin"]


class BuiltinPlugin(Plugin):
    """Diagnostics (echo, sleep): no dependencies beyond the core."""

    name = "builtin"
    version = __version__

    def task_types(self) -> list[TaskType]:
        from open_autoglm.tasks.diagnostics import diagnostic_task_types

        return diagnostic_task_types()
