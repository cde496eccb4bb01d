"""Plugin discovery and the registry of task types, rule actions and hooks.

Plugins come from two places only: the entry-point group ``open_autoglm.plugins`` (installed
packages) and the directories named in ``plugins.dirs``. Each plugin's status is recorded
(loaded, initialized, or failed with the reason); one broken plugin never stops the others.
"""

from __future__ import annotations

import enum
import functools
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from open_autoglm.errors import NotFoundError, PluginError
from open_autoglm.plugins.base import HOOK_NAMES, Plugin, RuleAction
from open_autoglm.tasks.base import TaskType

__all__ = ["ENTRY_POINT_GROUP", "PluginRecord", "PluginRegistry", "PluginState"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "open_autoglm.plugins"


class PluginState(enum.StrEnum):
    LOADED = "loaded"
    INITIALIZED = "initialized"
    FAILED = "failed"


@dataclass
class PluginRecord:
    name: str
    version: str
    source: str
    state: PluginState
    reason: str = ""
    task_types: tuple[str, ...] = ()
    rule_actions: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "status": self.state.value,
            "reason": self.reason,
            "task_types": list(self.task_types),
            "rule_actions": list(self.rule_actions),
            "hooks": list(self.hooks),
        }


class PluginRegistry:
    def __init__(self) -> None:
        self._records: dict[str, PluginRecord] = {}
        self._task_types: dict[str, TaskType] = {}
        self._actions: dict[str, RuleAction] = {}
        self._hooks: dict[str, list[Callable[..., Any]]] = {name: [] for name in HOOK_NAMES}

    # -- discovery ---------------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, Any]) -> PluginRegistry:
        """Build a registry from plugin settings (``dirs``, ``entry_points``, ``config``)."""
        reg = cls()
        reg.discover(
            dirs=[Path(d) for d in env.get("dirs", [])],
            entry_points=env.get("entry_points", True),
            config=env.get("config", {}),
        )
        return reg

    def discover(
        self,
        *,
        dirs: Iterable[Path] = (),
        entry_points: bool = True,
        config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        config = config or {}
        if entry_points:
            for ep in sorted(
                importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
            ):
                self._load(f"entry point {ep.name} ({ep.value})", ep.name, ep.load, config)
        for directory in dirs:
            directory = Path(directory)
            if not directory.is_dir():
                self._fail(str(directory), f"plugin dir {directory}", "directory does not exist")
                continue
            for path in sorted(directory.iterdir()):
                if path.name.startswith(("_", ".")):
                    continue
                if path.suffix == ".py" or (path / "__init__.py").exists():
                    self._load(
                        f"file {path}", path.stem, functools.partial(_import_path, path), config
                    )

    def _load(
        self,
        source: str,
        fallback_name: str,
        loader: Callable[[], Any],
        config: Mapping[str, Mapping[str, Any]],
    ) -> None:
        try:
            obj = loader()
            plugins = list(_plugins_in(obj))
            if not plugins:
                raise PluginError("no Plugin subclass or 'plugin' object found")
        except Exception as exc:
            self._fail(fallback_name, source, f"{type(exc).__name__}: {exc}")
            return
        for plugin in plugins:
            self.register(
                plugin, source=source, config=config.get(plugin.name or fallback_name, {})
            )

    def register(
        self, plugin: Plugin, *, source: str = "code", config: Mapping[str, Any] | None = None
    ) -> PluginRecord:
        """Initialise ``plugin`` and register what it contributes; records failures."""
        name = plugin.name or type(plugin).__name__
        if name in self._records and self._records[name].state is not PluginState.FAILED:
            return self._records[name]
        record = PluginRecord(name, plugin.version, source, PluginState.LOADED)
        self._records[name] = record
        try:
            plugin.initialize(config or {})
            types = plugin.task_types()
            actions = plugin.rule_actions()
            hooks = plugin.hooks()
            clash = [t.name for t in types if t.name in self._task_types]
            if clash:
                raise PluginError(f"task type(s) already registered: {', '.join(clash)}")
            bad_hooks = sorted(set(hooks) - HOOK_NAMES)
            if bad_hooks:
                raise PluginError(f"unknown hook(s): {', '.join(bad_hooks)}")
        except Exception as exc:
            record.state = PluginState.FAILED
            record.reason = f"{type(exc).__name__}: {exc}"
            log.warning("plugin %s failed: %s", name, record.reason)
            return record
        for t in types:
            if t.plugin != name:
                t = _with_plugin(t, name)
            self._task_types[t.name] = t
        self._actions.update(actions)
        for hook, fns in hooks.items():
            self._hooks[hook].extend(fns)
        record.state = PluginState.INITIALIZED
        record.task_types = tuple(t.name for t in types)
        record.rule_actions = tuple(actions)
        record.hooks = tuple(hooks)
        return record

    def _fail(self, name: str, source: str, reason: str) -> None:
        log.warning("plugin %s from %s failed: %s", name, source, reason)
        self._records[name] = PluginRecord(name, "", source, PluginState.FAILED, reason)

    # -- lookup ------------------------------------------------------------------------------

    def task_type(self, name: str) -> TaskType:
        try:
            return self._task_types[name]
        except KeyError:
            known = ", ".join(sorted(self._task_types)) or "none"
            raise NotFoundError(f"unknown task type {name!r}; known: {known}") from None

    def has_task_type(self, name: str) -> bool:
        return name in self._task_types

    def task_types(self) -> list[TaskType]:
        return [self._task_types[k] for k in sorted(self._task_types)]

    def param_fields(self, name: str) -> frozenset[str] | None:
        t = self._task_types.get(name)
        return t.param_fields() if t else None

    def rule_actions(self) -> dict[str, RuleAction]:
        return dict(self._actions)

    def hooks(self, name: str) -> list[Callable[..., Any]]:
        return list(self._hooks.get(name, []))

    def call_hooks(self, name: str, **kwargs: Any) -> None:
        for fn in self._hooks.get(name, []):
            try:
                fn(**kwargs)
            except Exception:
                log.exception("hook %s of a plugin failed", name)

    def records(self) -> list[PluginRecord]:
        return [self._records[k] for k in sorted(self._records)]


def _with_plugin(t: TaskType, plugin: str) -> TaskType:
    from dataclasses import replace

    return replace(t, plugin=plugin)


def _plugins_in(obj: Any) -> Iterable[Plugin]:
    """Plugins from an entry-point target or a loaded module."""
    if isinstance(obj, Plugin):
        yield obj
    elif isinstance(obj, type) and issubclass(obj, Plugin):
        yield obj()
    elif isinstance(obj, type(sys)):
        found = getattr(obj, "plugin", None)
        if isinstance(found, Plugin):
            yield found
            return
        for value in vars(obj).values():
            if (
                isinstance(value, type)
                and issubclass(value, Plugin)
                and value is not Plugin
                and value.__module__ == obj.__name__
            ):
                yield value()


def _import_path(path: Path) -> Any:
    mod_name = f"open_autoglm_plugin_{path.stem}"
    target = path / "__init__.py" if path.is_dir() else path
    spec = importlib.util.spec_from_file_location(mod_name, target)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    return module
