"""Group commit: one writer thread turns many small task writes into few transactions.

Every write is queued with a Future; the thread drains whatever is queued (up to
``max_batch``), collapses the writes for each task into one row insert or update, runs them
with ``executemany`` in a single transaction, then resolves the futures. A caller that needs
durability (the API before sending 202) waits on its future; the scheduler's state writes
do not wait. If a batch fails, each write is retried alone so one bad write fails only
its own future.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from open_autoglm.errors import StorageError
from open_autoglm.storage.tables import results, task_events, tasks

__all__ = ["TaskWrite", "WriteBatcher"]

log = logging.getLogger(__name__)

# A literal clause: executemany cannot take the expanding parameter ``not_in`` would use.
_NOT_TERMINAL = sa.text("status NOT IN ('succeeded', 'failed', 'cancelled')")


@dataclass(slots=True)
class TaskWrite:
    """One write: an insert (``row``), a row update (``fields``), events and a result."""

    task_id: str
    row: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    terminal: bool = False
    events: list[tuple[float, str, Any]] = field(default_factory=list)
    result: Any = None
    has_result: bool = False


_Item = tuple[TaskWrite | Callable[[Connection], Any], Future[Any]]


class WriteBatcher:
    def __init__(self, engine: Engine, *, max_batch: int = 512, linger_s: float = 0.001) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._linger_below = 16
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="autoglm-writer", daemon=True)
        self._closed = False
        self.batches = 0
        self.writes = 0
        self._insert_result = self._result_insert_stmt()

    def start(self) -> None:
        self._thread.start()

    def submit(self, write: TaskWrite | Callable[[Connection], Any]) -> Future[Any]:
        """Queue a write; the future resolves after its transaction commits.

        A callable is run as ``fn(connection)`` inside the batch transaction (for the rare
        writes that are not task writes); its return value resolves the future.
        """
        fut: Future[Any] = Future()
        if self._closed:
            fut.set_exception(StorageError("storage writer is closed"))
            return fut
        self._queue.put((write, fut))
        return fut

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            stop = self._drain(batch)
            if not stop and len(batch) < self._linger_below:
                # Under load, waiting a moment turns many 1-write transactions into one.
                time.sleep(self._linger_s)
                stop = self._drain(batch)
            self._commit(batch)

    def _drain(self, batch: list[_Item]) -> bool:
        """Move queued writes into ``batch``; True if the stop marker was seen."""
        while len(batch) < self._max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                return False
            if nxt is None:
                return True
            batch.append(nxt)
        return False

    def _commit(self, batch: list[_Item]) -> None:
        try:
            with self._engine.begin() as conn:
                outcomes = self._apply(conn, batch)
        except Exception as exc:
            log.debug("batch of %d failed (%s); retrying one by one", len(batch), exc)
            if len(batch) == 1:
                err = exc if isinstance(exc, StorageError) else StorageError(f"write failed: {exc}")
                log.error("storage write failed: %s", exc)
                batch[0][1].set_exception(err)
                return
            for one in batch:  # isolate the failing write
                self._commit([one])
            return
        self.batches += 1
        self.writes += len(batch)
        for (_, fut), outcome in zip(batch, outcomes, strict=True):
            fut.set_result(outcome)

    def _apply(self, conn: Connection, batch: list[_Item]) -> list[Any]:
        inserts: dict[str, dict[str, Any]] = {}
        updates: dict[str, dict[str, Any]] = {}
        terminal: set[str] = set()
        events: list[dict[str, Any]] = []
        result_rows: list[dict[str, Any]] = []
        outcomes: list[Any] = [None] * len(batch)
        callables: list[tuple[int, Callable[[Connection], Any]]] = []

        # Idempotency keys: an insert whose key already exists resolves to the existing task.
        keyed = {
            w.row["idempotency_key"]: i
            for i, (w, _) in enumerate(batch)
            if isinstance(w, TaskWrite) and w.row and w.row.get("idempotency_key")
        }
        existing: dict[str, str] = {}
        if keyed:
            rows = conn.execute(
                sa.select(tasks.c.idempotency_key, tasks.c.id).where(
                    tasks.c.idempotency_key.in_(list(keyed))
                )
            )
            existing = {str(k): str(v) for k, v in rows}
        skipped: set[str] = set()
        seen_keys: dict[str, str] = {}

        for i, (w, _) in enumerate(batch):
            if not isinstance(w, TaskWrite):
                callables.append((i, w))
                continue
            tid = w.task_id
            if w.row is not None:
                key = w.row.get("idempotency_key")
                if key and (key in existing or key in seen_keys):
                    outcomes[i] = (existing.get(key) or seen_keys[key], False)
                    skipped.add(tid)
                    continue
                if key:
                    seen_keys[key] = tid
                inserts[tid] = dict(w.row)
                outcomes[i] = (tid, True)
            if tid in skipped:
                continue
            if w.fields:
                if tid in inserts:
                    inserts[tid].update(w.fields)
                else:
                    updates.setdefault(tid, {}).update(w.fields)
                    if w.terminal:
                        terminal.add(tid)
            for ts, kind, data in w.events:
                events.append({"task_id": tid, "ts": ts, "kind": kind, "data": data})
            if w.has_result:
                result_rows.append({"task_id": tid, "result": w.result, "created_at": time.time()})

        if inserts:
            conn.execute(tasks.insert(), list(inserts.values()))
        if updates:
            self._run_updates(conn, updates, terminal)
        if events:
            conn.execute(task_events.insert(), events)
        if result_rows:
            conn.execute(self._insert_result, result_rows)
        for i, fn in callables:
            outcomes[i] = fn(conn)
        return outcomes

    def _run_updates(
        self, conn: Connection, updates: dict[str, dict[str, Any]], terminal: set[str]
    ) -> None:
        # executemany needs one column set per statement: group by (columns, terminal guard).
        groups: dict[tuple[tuple[str, ...], bool], list[dict[str, Any]]] = defaultdict(list)
        for tid, fields in updates.items():
            cols = tuple(sorted(fields))
            groups[(cols, tid in terminal)].append(
                {"_id": tid, **{f"v_{k}": v for k, v in fields.items()}}
            )
        for (cols, is_terminal), rows in groups.items():
            stmt = tasks.update().where(tasks.c.id == sa.bindparam("_id"))
            if is_terminal:
                # A terminal state is written once: never overwrite another terminal state.
                stmt = stmt.where(_NOT_TERMINAL)
            stmt = stmt.values({c: sa.bindparam(f"v_{c}") for c in cols})
            conn.execute(stmt, rows)

    def _result_insert_stmt(self) -> Any:
        dialect = self._engine.dialect.name
        if dialect == "sqlite":
            return sqlite.insert(results).on_conflict_do_nothing(index_elements=["task_id"])
        if dialect == "postgresql":
            return postgresql.insert(results).on_conflict_do_nothing(index_elements=["task_id"])
        return results.insert()
