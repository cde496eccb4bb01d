"""Named rulesets, compiled once and cached: the ``rulesets`` service.

The catalog does no I/O of its own: it is given ``load(name) -> stored row`` (the storage hub's
``get_ruleset``) and a clock. A compiled entry is reused until the ruleset is replaced or
deleted through this process (:meth:`RulesetCatalog.invalidate`), or ``ttl_s`` has passed, which
bounds how stale a cache can be when another API replica changed the ruleset.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from open_autoglm.rules.dsl import RulesetModel, parse_ruleset
from open_autoglm.rules.model import Rule
from open_autoglm.spec.limits import DEFAULT_LIMITS, InputLimits

__all__ = ["CompiledRuleset", "RulesetCatalog"]

Actions = Mapping[str, Callable[..., Any]]


@dataclass(frozen=True)
class CompiledRuleset:
    """A stored ruleset with its compiled rules."""

    name: str
    version: int
    source: Mapping[str, Any]
    model: RulesetModel
    rules: tuple[Rule, ...]


class RulesetCatalog:
    """Validate, compile and cache named rulesets.

    Args:
        load: returns the stored row ``{"name", "source", "version", ...}`` or raises
            :class:`~open_autoglm.errors.NotFoundError`.
        actions: the named actions rules may call, or a function returning them (plugins
            register theirs after the catalog is built).
        ttl_s: how long a compiled entry is trusted without a reload.
        clock: monotonic seconds (injected for tests).
        limits: the input limits rulesets are compiled and evaluated within.
    """

    def __init__(
        self,
        load: Callable[[str], Mapping[str, Any]],
        actions: Actions | Callable[[], Actions],
        *,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        limits: InputLimits = DEFAULT_LIMITS,
    ) -> None:
        self._load = load
        self.limits = limits
        self._actions = actions
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, CompiledRuleset]] = {}

    @property
    def actions(self) -> Actions:
        return self._actions() if callable(self._actions) else self._actions

    def validate(self, source: Mapping[str, Any]) -> tuple[RulesetModel, list[Rule]]:
        """Compile ``source``; raise ValidationError listing every problem with its location."""
        return parse_ruleset(source, self.actions, self.limits)

    def compiled(self, name: str) -> CompiledRuleset:
        """The compiled ruleset ``name`` (cached); NotFoundError if there is none."""
        now = self._clock()
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        row = self._load(name)
        model, rules = self.validate(row["source"])
        entry = CompiledRuleset(name, int(row["version"]), row["source"], model, tuple(rules))
        with self._lock:
            self._cache[name] = (now, entry)
        return entry

    def is_fresh(self, name: str) -> bool:
        """True when :meth:`compiled` would answer from the cache (no load, no compile)."""
        with self._lock:
            hit = self._cache.get(name)
        return hit is not None and self._clock() - hit[0] < self.ttl_s

    def get(self, name: str) -> dict[str, Any]:
        """The ruleset document ``name`` (what ``rule-inference`` takes by name)."""
        return dict(self.compiled(name).source)

    def invalidate(self, name: str | None = None) -> None:
        """Forget ``name`` (or everything); the next use reloads it."""
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name, None)
