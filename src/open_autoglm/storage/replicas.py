"""Replica leases: which server process owns which tasks, and taking over from dead ones.

Each server process (a *replica*) registers a row and renews it by heartbeat. A task row
carries the replica that accepted it (``owner``); only that replica runs it. A replica whose
heartbeat is older than the lease, or whose process is gone from this host, is dead: its row
is deleted and its queued and running tasks are claimed by whoever notices first, in one
``UPDATE ... WHERE owner NOT IN (SELECT id FROM replicas) RETURNING``. Two replicas racing
cannot both win a task: the second one's update re-checks the owner the first one wrote,
and that owner is a live replica.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from open_autoglm.storage.tables import replicas, tasks

__all__ = ["ReplicaRegistry", "pid_alive"]

_ACTIVE = ("queued", "running")


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` runs on this host. A zombie (exited, not yet reaped by
    its parent) does not: it answers signals but will never run again."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc (not Linux): existence is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True
    return state not in (b"Z", b"X")


class ReplicaRegistry:
    def __init__(
        self,
        engine: Engine,
        task_columns: tuple[Any, ...],
        row: Callable[[Any], dict[str, Any]],
        *,
        host: str | None = None,
        alive: Callable[[int], bool] = pid_alive,
    ) -> None:
        self._engine = engine
        self._columns = task_columns
        self._row = row
        self.host = host or socket.gethostname()
        self._alive = alive

    def register(self, replica_id: str, now: float) -> None:
        with self._engine.begin() as conn:
            self._insert(conn, replica_id, now)

    def _insert(self, conn: Connection, replica_id: str, now: float) -> None:
        conn.execute(
            replicas.insert().values(
                id=replica_id, host=self.host, pid=os.getpid(), started_at=now, heartbeat_at=now
            )
        )

    def heartbeat(self, replica_id: str, now: float) -> bool:
        """Renew the lease; False if the row was gone (another replica declared us dead),
        in which case it is registered again."""
        with self._engine.begin() as conn:
            n = conn.execute(
                replicas.update().where(replicas.c.id == replica_id).values(heartbeat_at=now)
            ).rowcount
            if n:
                return True
            self._insert(conn, replica_id, now)
            return False

    def still_owned(self, task_ids: list[str], replica_id: str) -> set[str]:
        """Which of ``task_ids`` ``replica_id`` still owns (after it was declared dead, the
        others may have been claimed)."""
        if not task_ids:
            return set()
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks.c.id).where(tasks.c.id.in_(task_ids), tasks.c.owner == replica_id)
            )
            return {str(r[0]) for r in rows}

    def unregister(self, replica_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(replicas.delete().where(replicas.c.id == replica_id))

    def live(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(replicas))]

    def claim_orphans(self, replica_id: str, now: float, lease_s: float) -> list[dict[str, Any]]:
        """Declare dead replicas dead, then take their queued and running tasks (and any
        without an owner); returns the claimed task rows in submission order."""
        with self._engine.begin() as conn:
            others = [r for r in conn.execute(sa.select(replicas)) if r.id != replica_id]
            gone = [r.id for r in others if r.host == self.host and not self._alive(int(r.pid))]
            lapsed = [r.id for r in others if r.id not in gone and r.heartbeat_at < now - lease_s]
            if gone:
                conn.execute(replicas.delete().where(replicas.c.id.in_(gone)))
            if lapsed:
                # The lease is checked again as the row is deleted: a replica that renewed it
                # since the read above (its heartbeat may have been waiting on a lock) lives.
                conn.execute(
                    replicas.delete().where(
                        replicas.c.id.in_(lapsed), replicas.c.heartbeat_at < now - lease_s
                    )
                )
            claimed = conn.execute(
                tasks.update()
                .where(tasks.c.status.in_(_ACTIVE))
                .where(
                    sa.or_(
                        tasks.c.owner.is_(None),
                        tasks.c.owner.not_in(sa.select(replicas.c.id)),
                    )
                )
                .values(owner=replica_id)
                .returning(*self._columns)
            )
            rows = [self._row(r) for r in claimed]
        rows.sort(key=lambda r: r["seq"])
        return rows
