"""Linux CPU scheduling: the server's own threads yield to the model workers.

Under load the model workers (``executors/workers/``, one per core) compute without a
break, and the server process's threads (event loop, scheduler, storage writer, dispatch)
wake hundreds of times a second for a fraction of a millisecond each. Under the default
policy every such wake-up preempts a worker in the middle of its matrix products, which
costs it more than the wake-up's own CPU time. Under ``SCHED_BATCH`` a waking thread does
not preempt the running one: it runs when the worker's time slice ends (a millisecond or
two), or at once on an idle core, so at low load nothing changes. The processes that compute
(model workers, subprocess tasks) get the default policy back when they start.

``executor.yield_to_replicas`` (default on) applies it in ``autoglm serve``; elsewhere
(tests, an embedding application) the process is left as it is. Not Linux: nothing to do.
"""

from __future__ import annotations

import logging
import os

__all__ = ["compute_policy", "yield_to_replicas"]

log = logging.getLogger(__name__)

_applied = False


def yield_to_replicas() -> bool:
    """Put every thread of this process under ``SCHED_BATCH``; threads started later inherit
    it. Returns whether it was applied."""
    global _applied
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None or not os.path.isdir("/proc/self/task"):
        return False
    try:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(tid), batch, os.sched_param(0))
    except OSError as exc:  # a container may forbid it; serving works the same without
        log.info("server threads keep the default CPU policy: %s", exc)
        return False
    _applied = True
    return True


def compute_policy(pid: int) -> None:
    """Give a process that computes (a model replica, a subprocess task) the default policy
    back: it inherits the server's when it is started."""
    if not _applied:
        return
    try:
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
    except OSError as exc:  # it may have exited already; its handshake reports that
        log.debug("process %d keeps the batch policy: %s", pid, exc)
