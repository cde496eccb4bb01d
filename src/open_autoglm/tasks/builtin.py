"""The built-in plugins. They register exactly like third-party ones (entry points)."""

from __future__ import annotations

from open_autoglm import __version__
from open_autoglm.plugins.base import Plugin
from open_autoglm.tasks.base import TaskType

__all__ = [
    "BuiltinPlugin",
    "ExplainPlugin",
    "GraphPlugin",
    "MultimodalPlugin",
    "RulesPlugin",
    "TemporalPlugin",
    "TextPlugin",
]


class BuiltinPlugin(Plugin):
    """Diagnostics (echo, sleep): no dependencies beyond the core."""

    name = "builtin"
    version = __version__

    def task_types(self) -> list[TaskType]:
        from open_autoglm.tasks.diagnostics import diagnostic_task_types

        return diagnostic_task_types()


class TextPlugin(Plugin):
    """text-generation, text-classification, embedding, text-classifier-train (needs the
    ``ml`` extra)."""

    name = "text"
    version = __version__

    def task_types(self) -> list[TaskType]:
        from open_autoglm.tasks.text import text_task_types
        from open_autoglm.tasks.text_train import text_train_task_types

        return [*text_task_types(), *text_train_task_types()]


class GraphPlugin(Plugin):
    """graph-train, graph-predict (needs the ``ml`` extra)."""

    name = "graph"
    version = __version__

    def task_types(self) -> list[TaskType]:
        from open_autoglm.tasks.graph import graph_task_types

        return graph_task_types()


class TemporalPlugin(Plugin):
    """temporal-train, temporal-predict: link prediction on event streams (``ml`` extra)."""

    name = "temporal"
    version = __version__

    def task_types(self) -> list[TaskType]:
        from open_autoglm.tasks.temporal import temporal_task_types

        return temporal_task_types()


class RulesPlugin(Plugin):
    """rule-inference on the Rete engine."""

    name = "rules"
    version = __version__

    def task_types(self) -> list[TaskType]:
        from open_autoglm.tasks.rules import rule_task_types

        return rule_task_types()


class ExplainPlugin(Plugin):
    """explain: attributions for text, embedding and graph models (needs the ``ml`` extra)."""

    name = "explain"
    version = __version__

    def task_types(self) -> list[TaskType]:
        from open_autoglm.tasks.explain import explain_task_types

        return explain_task_types()


class MultimodalPlugin(Plugin):
    """fusion-train, fusion-predict: text + tabular fusion (needs the ``ml`` extra)."""

    name = "multimodal"
    version = __version__

    def task_types(self) -> list[TaskType]:
        from open_autoglm.tasks.multimodal import fusion_task_types

        return fusion_task_types()
