"""Admission by ruleset: facts from a submitted task, a decision, the rewritten spec.

Pure and synchronous (the clock is injected); the API wraps :meth:`RulesetAdmission.decide`
as an admission policy. Facts the rules see:

- ``task``: ``task_type``, ``model``, ``priority``, ``timeout_s``, ``max_retries``,
  ``idempotency_key``, ``tags`` (``metadata.tags``), ``params`` and ``metadata`` (frozen). The
  payload (``input``/``inputs``) is left out: policies decide on who asks for what, and
  freezing a large payload would cost every submit. Bind ``params``/``metadata`` to a variable
  and read inside them in a ``test``: ``?p.max_tokens > 512``, ``?m['team']['tier']``.
- ``metadata``: one ``{key, value}`` per metadata entry, so rules can match on it.
- ``client``: ``{id, kind}``, e.g. ``{id: "key:3fa2...", kind: "key"}`` or ``kind: "ip"``.
- ``rate``: ``{name, value}`` for this client's recent submits: ``per_second``, ``per_minute``.

The decision can block (:class:`~open_autoglm.errors.PolicyBlockedError` naming the rule),
set the priority, reroute to another model and add tags; it is returned as a ``policy`` event.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import pydantic

from open_autoglm.errors import (
    AutoGLMError,
    NotFoundError,
    PolicyBlockedError,
    UnavailableError,
)
from open_autoglm.rules.catalog import RulesetCatalog
from open_autoglm.rules.policy import AdmissionPolicy, PolicyDecision
from open_autoglm.spec.task import TaskSpec

__all__ = ["RulesetAdmission", "SubmitRates", "task_facts"]

log = logging.getLogger(__name__)

PolicyEvent = tuple[str, dict[str, Any]]


class SubmitRates:
    """Per-client submit counts over the last second and minute, in one-second buckets.

    Memory is bounded: at most 61 buckets per client and ``max_clients`` clients (the least
    recently seen are dropped first).
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000
    ) -> None:
        self._clock = clock
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, deque[list[int]]] = OrderedDict()

    def hit(self, client: str) -> dict[str, float]:
        """Count one submit by ``client`` now; return its rates including this one."""
        now = self._clock()
        sec = math.floor(now)
        with self._lock:
            buckets = self._clients.get(client)
            if buckets is None:
                buckets = self._clients[client] = deque()
                while len(self._clients) > self.max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(client)
            if buckets and buckets[-1][0] == sec:
                buckets[-1][1] += 1
            else:
                buckets.append([sec, 1])
            while buckets[0][0] <= sec - 60:
                buckets.popleft()
            per_minute = sum(n for _, n in buckets)
            # Sliding one-second window: this bucket plus the overlapping share of the last one.
            prev = buckets[-2][1] if len(buckets) > 1 and buckets[-2][0] == sec - 1 else 0
            per_second = buckets[-1][1] + prev * (1.0 - (now - sec))
        return {"per_second": round(per_second, 3), "per_minute": float(per_minute)}


def task_facts(spec: TaskSpec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``task`` fact and the ``metadata`` facts for ``spec``."""
    tags = spec.metadata.get("tags", [])
    task = {
        "task_type": spec.task_type,
        "model": spec.model,
        "priority": spec.priority,
        "timeout_s": spec.timeout_s,
        "max_retries": spec.max_retries,
        "idempotency_key": spec.idempotency_key,
        "tags": tags if isinstance(tags, list) else [tags],
        "params": spec.params,
        "metadata": spec.metadata,
    }
    meta = [{"type": "metadata", "key": k, "value": v} for k, v in spec.metadata.items()]
    return task, meta


class RulesetAdmission:
    """Run the stored ruleset ``name`` on every submitted task.

    Fails closed: a missing ruleset, or one that loops or errors, refuses the task with
    :class:`~open_autoglm.errors.UnavailableError` (503) naming the ruleset, and logs it.
    """

    def __init__(
        self,
        catalog: RulesetCatalog,
        name: str,
        *,
        rates: SubmitRates | None = None,
        max_firings: int = 1000,
    ) -> None:
        self.catalog = catalog
        self.name = name
        self.rates = rates or SubmitRates()
        self.max_firings = max_firings

    def decide(self, spec: TaskSpec, client: str) -> tuple[TaskSpec, list[PolicyEvent]]:
        rates = self.rates.hit(client)
        try:
            ruleset = self.catalog.compiled(self.name)
        except NotFoundError:
            log.error("admission ruleset %r does not exist: refusing tasks", self.name)
            raise UnavailableError(
                f"admission ruleset {self.name!r} does not exist; tasks are refused until it "
                f"is created (PUT /v1/rulesets/{self.name})",
                details=[{"loc": ["admission_ruleset"], "msg": f"ruleset {self.name!r} missing"}],
            ) from None
        policy = AdmissionPolicy.from_rules(
            ruleset.rules,
            actions=self.catalog.actions,
            max_firings=self.max_firings,
            # a client's metadata are facts: bound what a join over them can cost per task
            cpu_budget_s=self.catalog.limits.admission_cpu_s,
        )
        task, meta = task_facts(spec)
        kind = client.split(":", 1)[0] if ":" in client else "other"
        try:
            decision = policy.evaluate(
                task=task, client={"id": client, "kind": kind}, rates=rates, extra=meta
            )
        except AutoGLMError as exc:
            log.error("admission ruleset %r failed: %s", self.name, exc.message)
            raise UnavailableError(
                f"admission ruleset {self.name!r} failed: {exc.message}", details=exc.details
            ) from None
        event: dict[str, Any] = {
            "ruleset": self.name,
            "version": ruleset.version,
            "fired": decision.fired,
            "blocked": decision.blocked,
        }
        if decision.blocked:
            rule = decision.block_rule or "?"
            log.info("task from %s blocked by rule %r of %r", client, rule, self.name)
            reason = f": {decision.reason}" if decision.reason else ""
            raise PolicyBlockedError(
                f"blocked by rule {rule!r} of admission ruleset {self.name!r}{reason}",
                rule=rule,
                details=[{"loc": ["rulesets", self.name, rule], "msg": decision.reason}],
            )
        spec = self._apply(spec, decision, event)
        return spec, [("policy", event)]

    def _apply(self, spec: TaskSpec, d: PolicyDecision, event: dict[str, Any]) -> TaskSpec:
        changes: dict[str, Any] = {}
        if d.priority is not None:
            priority = min(9, max(0, d.priority))  # rules cannot leave the 0-9 scale
            if priority != spec.priority:
                changes["priority"] = priority
                event["priority"] = {"from": spec.priority, "to": priority}
        if d.model is not None and d.model != spec.model:
            changes["model"] = d.model
            event["model"] = {"from": spec.model, "to": d.model}
        if d.tags:
            old = spec.metadata.get("tags", [])
            old = old if isinstance(old, list) else [old]
            added = [t for t in d.tags if t not in old]
            if added:
                changes["metadata"] = {**spec.metadata, "tags": [*old, *added]}
                event["tags"] = added
        if not changes:
            return spec
        try:  # model_copy skips validation: check the rewritten fields on their own
            TaskSpec.model_validate(
                {"task_type": spec.task_type, "model": changes.get("model", spec.model)}
            )
        except pydantic.ValidationError:
            raise UnavailableError(
                f"admission ruleset {self.name!r} rerouted to an invalid model name "
                f"{changes['model']!r}"
            ) from None
        return spec.model_copy(update=changes)
