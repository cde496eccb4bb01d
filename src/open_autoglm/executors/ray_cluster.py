"""The Ray connection shared by everything in this process that runs work on Ray.

``acquire(settings)`` joins the configured cluster (``executor.ray_address``) or starts a local
Ray instance sized by the executor settings, and counts its users; ``release()`` undoes one
``acquire`` and shuts Ray down when the last user leaves a Ray instance this module started
(a cluster we only joined is disconnected from, never stopped). The ray executor and the model
service's actor replicas both hold it, so several runtimes in one process (tests, notebooks)
share one connection.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from open_autoglm.config import ExecutorSettings
from open_autoglm.errors import UnavailableError

__all__ = ["ClusterInfo", "acquire", "ray_module", "release"]

log = logging.getLogger(__name__)

NAMESPACE = "open-autoglm"
# What every Ray worker of ours runs with: no hub access, one tokenizer thread.
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

_LOCK = threading.Lock()
_USERS = 0
_OWNED = False  # this process started the Ray instance (so it stops it)


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    cpu: float
    memory_mb: int
    gpu: int
    address: str
    local: bool  # a Ray instance this process started


def ray_module() -> Any:
    """``import ray``, or a clear error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise UnavailableError(
            "executor.backend = 'ray' needs Ray: pip install 'open-autoglm[ray]'"
        ) from None
    return ray


def acquire(settings: ExecutorSettings) -> ClusterInfo:
    """Connect (once per process) and return what the cluster offers."""
    global _USERS, _OWNED
    ray = ray_module()
    with _LOCK:
        if not ray.is_initialized():
            # Workers of a local instance inherit this environment; a joined cluster's do not,
            # so the same variables also travel as the job's runtime_env.
            os.environ.update(WORKER_ENV)
            kwargs: dict[str, Any] = {
                "namespace": NAMESPACE,
                "include_dashboard": False,
                "log_to_driver": False,
                "runtime_env": {"env_vars": dict(WORKER_ENV)},
            }
            if settings.ray_address:
                kwargs["address"] = settings.ray_address
            else:
                # "local", not None: with None Ray joins whatever cluster the machine's last
                # `ray start` recorded (/tmp/ray/ray_current_cluster), even a stopped one.
                kwargs.update(
                    address="local",
                    num_cpus=settings.cpu,
                    num_gpus=settings.gpu,
                    resources={},
                    object_store_memory=settings.ray_object_store_mb * 2**20,
                )
            try:
                ray.init(**kwargs)
            except Exception as exc:
                where = settings.ray_address or "a local instance"
                raise UnavailableError(f"could not start Ray ({where}): {exc}") from exc
            _OWNED = not settings.ray_address
            log.info("ray: connected to %s", settings.ray_address or "a new local instance")
        _USERS += 1
        local = _OWNED
    if local:  # a local instance: the settings are the budget (Ray's memory is all of RAM)
        return ClusterInfo(settings.cpu, settings.memory_mb, settings.gpu, "local", True)
    total = ray.cluster_resources()
    return ClusterInfo(
        cpu=float(total.get("CPU", 0.0)),
        memory_mb=int(total.get("memory", 0.0) // 2**20),
        gpu=int(total.get("GPU", 0.0)),
        address=str(settings.ray_address),
        local=False,
    )


def release() -> None:
    """One user fewer; the last one disconnects (and stops a Ray instance it started)."""
    global _USERS, _OWNED
    with _LOCK:
        if _USERS == 0:
            return
        _USERS -= 1
        if _USERS:
            return
        ray = ray_module()
        if ray.is_initialized():
            ray.shutdown()
        _OWNED = False
