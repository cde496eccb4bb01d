"""Group commit: one writer thread turns many small task writes into few transactions.

Every write is queued with a Future; the thread drains whatever is queued (up to
``max_batch``), collapses the writes for each task into one row insert or update, runs them
with ``executemany`` in a single transaction, then resolves the futures. A caller that needs
durability (the API before sending 202) waits on its future; the scheduler's state writes
do not wait. If a batch fails, each write is retried alone so one bad write fails only
its own future.

Log writes (``lazy=True``: an online task's record, stored after it was answered) have no
one waiting on them. A batch of only such writes lingers up to ``log_linger_s`` for more
company, and ends at once when a write someone waits on arrives: under load the writer
would otherwise wake and commit for every request, preempting the model replicas computing
on the same cores.

Fencing: a write that names an ``owner`` changes an existing task only while the task row
still belongs to that replica. A replica that stalled past its lease may have had its tasks
taken over (``storage/replicas.py``); when it wakes, its late writes must not overwrite the
new owner's record. The batch first locks the rows it will change that its writer still
owns (``UPDATE ... SET owner = owner WHERE owner = ? RETURNING id``: a row lock in
PostgreSQL, the write lock in SQLite, so no claim can slip in before the commit); writes for
the other rows are dropped whole (fields, events, result) and resolve to :data:`FENCED`.

The writer is a thread, not a child process: a process would take the GIL cost of
``sqlite3`` off the main process but compete for the cores the work runs on.
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

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from open_autoglm.errors import StorageError
from open_autoglm.futures import Promise
from open_autoglm.storage.tables import tasks

__all__ = ["FENCED", "TaskWrite", "WriteBatcher"]

log = logging.getLogger(__name__)

_TASK_COLUMNS = (
    "id",
    "task_type",
    "model",
    "status",
    "priority",
    "spec",
    "idempotency_key",
    "attempts",
    "max_retries",
    "durable",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "owner",
    "principal",
)
_JSON_COLUMNS = frozenset({"spec", "error"})

FENCED = "fenced"
"""The outcome of a write dropped because its task now belongs to another replica."""


def _json(value: Any) -> str | None:
    return (
        None if value is None else orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    )


def _task_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        _json(row.get(c)) if c in _JSON_COLUMNS else row.get(c, _DEFAULTS.get(c))
        for c in _TASK_COLUMNS
    )


_DEFAULTS: dict[str, Any] = {"attempts": 0, "max_retries": 0, "durable": True}


class _Sql:
    """The writer's statements as driver SQL: executemany without per-row SQLAlchemy cost.

    The group commit is the platform's hot path (three writes per task); SQLAlchemy Core
    spent more time building and binding these statements than SQLite spent running them.
    """

    def __init__(self, paramstyle: str) -> None:
        self.p = "?" if paramstyle == "qmark" else "%s"
        cols = ", ".join(_TASK_COLUMNS)
        self.insert_task = f"INSERT INTO tasks ({cols}) VALUES ({self._marks(len(_TASK_COLUMNS))})"
        self.insert_event = (
            f"INSERT INTO task_events (task_id, ts, kind, data) VALUES ({self._marks(4)})"
        )
        self.insert_result = (
            f"INSERT INTO results (task_id, result, created_at) VALUES ({self._marks(3)}) "
            "ON CONFLICT (task_id) DO NOTHING"  # a result is recorded once
        )
        self._updates: dict[tuple[tuple[str, ...], bool], str] = {}

    def _marks(self, n: int) -> str:
        return ", ".join([self.p] * n)

    def update(self, cols: tuple[str, ...], terminal: bool) -> str:
        key = (cols, terminal)
        if key not in self._updates:
            sets = ", ".join(f"{c} = {self.p}" for c in cols)
            sql = f"UPDATE tasks SET {sets} WHERE id = {self.p}"
            if terminal:  # a terminal state is written once: never overwrite another one
                sql += " AND status NOT IN ('succeeded', 'failed', 'cancelled')"
            self._updates[key] = sql
        return self._updates[key]


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
    owner: str | None = None  # the fence: change the task only while this replica owns it


_Write = TaskWrite | Callable[[Connection], Any]
# (writes, promise, grouped, lazy): a grouped item resolves its promise with the list of
# outcomes; a lazy one is a log write no one waits on soon.
_Item = tuple[list[_Write], Future[Any], bool, bool]


class WriteBatcher:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 512,
        linger_s: float = 0.001,
        log_linger_s: float = 0.025,
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._linger_below = 16
        self._log_linger_s = log_linger_s
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._urgent = threading.Event()  # set by every write someone waits on
        self._thread = threading.Thread(target=self._run, name="autoglm-writer", daemon=True)
        self._closed = False
        self.batches = 0
        self.writes = 0
        self._sql = _Sql(engine.dialect.paramstyle)

    def start(self) -> None:
        self._thread.start()

    def submit(
        self, write: TaskWrite | Callable[[Connection], Any], *, lazy: bool = False
    ) -> Future[Any]:
        """Queue a write; the future resolves after its transaction commits.

        A callable is run as ``fn(connection)`` inside the batch transaction (for the rare
        writes that are not task writes); its return value resolves the future. ``lazy``
        marks a log write no one waits on soon: it may wait up to ``log_linger_s`` for others.
        """
        return self._put([write], grouped=False, lazy=lazy)

    def submit_many(self, writes: list[TaskWrite], *, lazy: bool = False) -> Future[list[Any]]:
        """Queue several writes that commit in the same transaction; one future for all.

        The scheduler starts and finishes tasks in groups; one queue item and one future per
        group instead of per task keeps the hand-off cost off the hot path.
        """
        return self._put(list(writes), grouped=True, lazy=lazy)

    def _put(self, writes: list[_Write], *, grouped: bool, lazy: bool) -> Future[Any]:
        fut: Future[Any] = Promise()
        if self._closed:
            fut.set_exception(StorageError("storage writer is closed"))
            return fut
        self._queue.put((writes, fut, grouped, lazy))  # queued before the signal: see _run
        if not lazy:
            self._urgent.set()
        return fut

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._urgent.set()
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
            if not stop and all(it[3] for it in batch):
                # Only log writes: gather more, unless someone starts waiting. A write queued
                # before this clear() is drained right after it; one queued later sets the
                # event again, so the wait never sleeps through a write someone waits on.
                self._urgent.clear()
                stop = self._drain(batch)
                if not stop and all(it[3] for it in batch):
                    self._urgent.wait(self._log_linger_s)
                    stop = self._drain(batch)
            elif not stop and len(batch) < self._linger_below:
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
        writes = [w for item in batch for w in item[0]]
        try:
            with self._engine.begin() as conn:
                outcomes = self._apply(conn, writes)
        except Exception as exc:
            log.debug("batch of %d failed (%s); retrying one by one", len(batch), exc)
            if len(batch) == 1:
                err = exc if isinstance(exc, StorageError) else StorageError(f"write failed: {exc}")
                log.error("storage write failed: %s", exc)
                batch[0][1].set_exception(err)
                return
            for one in batch:  # isolate the failing item (a group fails as a whole)
                self._commit([one])
            return
        self.batches += 1
        self.writes += len(writes)
        i = 0
        for group, fut, grouped, _ in batch:
            n = len(group)
            fut.set_result(outcomes[i : i + n] if grouped else outcomes[i])
            i += n

    def _apply(self, conn: Connection, batch: list[_Write]) -> list[Any]:
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
            for i, w in enumerate(batch)
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
        fenced = self._fenced(conn, batch)

        for i, w in enumerate(batch):
            if not isinstance(w, TaskWrite):
                callables.append((i, w))
                continue
            tid = w.task_id
            if tid in fenced:
                outcomes[i] = FENCED
                continue
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

        sql = self._sql
        if inserts:
            conn.exec_driver_sql(sql.insert_task, [_task_tuple(r) for r in inserts.values()])
        if updates:
            self._run_updates(conn, updates, terminal)
        if events:
            conn.exec_driver_sql(
                sql.insert_event,
                [(e["task_id"], e["ts"], e["kind"], _json(e["data"])) for e in events],
            )
        if result_rows:
            conn.exec_driver_sql(
                sql.insert_result,
                [(r["task_id"], _json(r["result"]), r["created_at"]) for r in result_rows],
            )
        for i, fn in callables:
            outcomes[i] = fn(conn)
        return outcomes

    @staticmethod
    def _fenced(conn: Connection, batch: list[_Write]) -> set[str]:
        """Ids of the existing tasks this batch would change for a replica that no longer
        owns them; the rows it still owns are locked until the commit."""
        inserted = {w.task_id for w in batch if isinstance(w, TaskWrite) and w.row is not None}
        by_owner: dict[str, set[str]] = defaultdict(set)
        for w in batch:
            if isinstance(w, TaskWrite) and w.owner and w.task_id not in inserted:
                by_owner[w.owner].add(w.task_id)
        fenced: set[str] = set()
        for owner, ids in by_owner.items():
            held = conn.execute(
                tasks.update()
                .where(tasks.c.id.in_(ids), tasks.c.owner == owner)
                .values(owner=tasks.c.owner)
                .returning(tasks.c.id)
            )
            fenced |= ids - {str(r[0]) for r in held}
        if fenced:
            log.warning(
                "dropped writes for %d tasks now owned by another replica: %s",
                len(fenced),
                ", ".join(sorted(fenced)[:5]),
            )
        return fenced

    def _run_updates(
        self, conn: Connection, updates: dict[str, dict[str, Any]], terminal: set[str]
    ) -> None:
        # executemany needs one column set per statement: group by (columns, terminal guard).
        groups: dict[tuple[tuple[str, ...], bool], list[tuple[Any, ...]]] = defaultdict(list)
        for tid, fields in updates.items():
            cols = tuple(sorted(fields))
            values = [_json(fields[c]) if c in _JSON_COLUMNS else fields[c] for c in cols]
            groups[(cols, tid in terminal)].append((*values, tid))
        for (cols, is_terminal), rows in groups.items():
            conn.exec_driver_sql(self._sql.update(cols, is_terminal), rows)
