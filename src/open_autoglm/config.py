"""Typed settings, one class per area, from ``AUTOGLM_*`` env vars and an optional TOML file.

Precedence: explicit arguments > environment > TOML file (``AUTOGLM_CONFIG`` or ``--config``)
> defaults. Nested areas use ``__`` in env names, e.g. ``AUTOGLM_EXECUTOR__CPU=4``; the most
used ones also have flat aliases (``AUTOGLM_STORAGE_URL``, ``AUTOGLM_DATA_DIR``).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from open_autoglm.spec.limits import InputLimits

__all__ = [
    "ApiSettings",
    "CorsSettings",
    "ExecutorSettings",
    "LifecycleSettings",
    "ModelSettings",
    "OutboundSettings",
    "PluginSettings",
    "SchedulerSettings",
    "Settings",
    "StorageSettings",
    "WorkflowSettings",
    "load_settings",
]


class StorageSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/autoglm.db (WAL).",
    )
    commit_batch: int = Field(default=512, ge=1, description="max writes per group commit")
    online_retention_s: float = Field(
        default=7 * 86_400,
        ge=0,
        description="online inference records (/v1/infer, OpenAI routes: one per request, with "
        "its result) are deleted this long after they end; 0 keeps them for good",
    )
    prune_interval_s: float = Field(
        default=300.0, gt=0, description="how often expired online records are deleted"
    )


class ExecutorSettings(BaseModel):
    backend: Literal["local", "ray"] = Field(
        default="local",
        description="where work runs: 'local' (threads and subprocesses on this machine) or "
        "'ray' (process-mode tasks such as training run as Ray tasks with their cpu/memory/gpu "
        "requests, embedding and classification replicas as Ray actors; thread-mode tasks stay "
        "in the server's worker threads); needs the 'ray' extra",
    )
    ray_address: str | None = Field(
        default=None,
        description="'ray' backend: the cluster to join ('auto', 'host:6379', 'ray://host:10001'); "
        "None starts a local Ray instance sized by cpu, memory_mb and gpu",
    )
    ray_callback_host: str = Field(
        default="127.0.0.1",
        description="'ray' backend: the address of this server that Ray workers connect back to "
        "for a task's events, artifacts and service calls (this machine's cluster-facing address "
        "on a multi-node cluster, whose nodes must also share the artifact directory)",
    )
    ray_object_store_mb: int = Field(
        default=256, ge=64, description="'ray' backend: object store of a local Ray instance"
    )
    cpu: float = Field(default_factory=lambda: float(os.cpu_count() or 1), gt=0)
    memory_mb: int = Field(default=16_384, gt=0)
    gpu: int = Field(default=0, ge=0)
    threads: int = Field(default=8, ge=1, description="worker threads for in-process tasks")
    yield_to_replicas: bool = Field(
        default=True,
        description="autoglm serve: the server's threads run under Linux SCHED_BATCH and wait "
        "for a computing replica's time slice instead of preempting it (executors/sched_policy.py)",
    )


class SchedulerSettings(BaseModel):
    max_queued: int = Field(default=100_000, ge=1, description="admission bound on queued tasks")
    aging_s: float = Field(
        default=30.0,
        gt=0,
        description="seconds of waiting worth one priority level (no task starves)",
    )
    retry_base_s: float = Field(default=0.5, ge=0)
    retry_max_s: float = Field(default=60.0, ge=0)
    default_timeout_s: float | None = Field(default=None, gt=0)
    online_reserve_cpu: float = Field(
        default=1.0,
        ge=0,
        description=(
            "CPUs per executor reserved for online work (/v1/infer, the OpenAI routes): online "
            "tasks are placed before jobs and may use this much beyond the executor's cpu, "
            "which jobs never use, so a prediction never waits behind long training"
        ),
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "a replica that has not renewed its lease for this long is dead: another replica "
            "sharing the database takes over its queued and running tasks"
        ),
    )
    gc_threshold: int = Field(
        default=10_000,
        ge=0,
        description=(
            "the garbage collector's first threshold while the runtime runs (Python's default "
            "is 700); with thousands of tasks in flight, collections that often cost half of "
            "the scheduler's CPU. 0 leaves the collector alone"
        ),
    )


class RateLimitSettings(BaseModel):
    per_s: float | None = Field(
        default=None, gt=0, description="requests per second per client (API key or IP); None: off"
    )
    burst: int = Field(default=20, ge=1, description="requests a client may send at once")
    redis_url: str | None = Field(
        default=None,
        description="share the limits between API replicas through this Redis; unset: in memory",
    )


class CorsSettings(BaseModel):
    """Which other web origins a browser may let call the API (off: none may)."""

    allow_origins: list[str] = Field(
        default_factory=list,
        description="origins (scheme://host[:port]) whose pages may call the API; empty: CORS "
        "off, and a browser's cross-origin request that changes state is refused (403)",
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "DELETE"],
        description="methods those origins may use",
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "Content-Type", "X-API-Key", "Last-Event-ID"],
        description="request headers those origins may send",
    )
    max_age_s: int = Field(default=600, ge=0, description="how long a preflight is cached")


class LifecycleSettings(BaseModel):
    """How long a connection, a request and the server itself may take (api/lifecycle.py)."""

    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="a request's line and headers must arrive within this many s of the "
        "connection opening (or of the previous response); slower ones are closed",
    )
    body_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="a request's body must arrive within this many s of its headers",
    )
    max_connections_per_client: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="open connections from one client address; beyond them a new one is "
        "answered 429 and closed",
    )
    max_streams_per_client: int = Field(
        default=16,
        ge=1,
        le=100_000,
        description="open event streams (task events, streamed completions) per client "
        "(API key or address); beyond them 429 too_many_streams",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="on SIGTERM: stop accepting, let requests and running jobs finish for "
        "this long, then stop; unfinished durable jobs re-queue on the next start",
    )


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    api_keys: list[str] = Field(
        default_factory=list,
        repr=False,
        description="static admin keys; with none here and no managed key (autoglm keys "
        "create) the API needs no key",
    )
    max_input_depth: int = Field(default=32, ge=1)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    access_log: bool = Field(
        default=False, description="log one line per request: method, path, status, ms, task id"
    )


class PluginSettings(BaseModel):
    dirs: list[Path] = Field(default_factory=list, description="directories to load plugins from")
    entry_points: bool = True
    config: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ModelSettings(BaseModel):
    memory_budget_mb: float = Field(
        default=4096, gt=0, description="loaded models kept within this many MB (LRU eviction)"
    )
    cache_dir: Path | None = Field(
        default=None, description="materialised and converted models; default <data_dir>/models"
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="worker processes (one torch thread each) per embedding/classification "
        "model; None = one per CPU of executor.cpu, 0 = in the server process; an entry's "
        "options.replicas overrides it",
    )
    warm_bundled: bool = Field(
        default=True,
        description="with register_bundled_models, load the bundled embedding model in the "
        "background at start (its replicas forked from a process with torch imported)",
    )
    upstream_failure_threshold: int = Field(
        default=5, ge=1, description="consecutive upstream failures that open its circuit"
    )
    upstream_reset_s: float = Field(
        default=10.0, gt=0, description="seconds an open upstream circuit waits before a probe"
    )
    upstream_max_concurrency: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="calls in flight to one upstream model at once (its bulkhead); a source's "
        "max_concurrency overrides it",
    )
    upstream_max_waiting: int = Field(
        default=64,
        ge=0,
        le=100_000,
        description="calls that may wait for one of those slots; beyond them a call is refused "
        "at once (429 bulkhead_full); a source's max_waiting overrides it",
    )
    upstream_max_wait_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="seconds a call waits for an upstream slot before it is refused",
    )
    upstream_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="API keys of upstream models by name; an entry's source.api_key names one",
    )
    upstream_key_envs: list[str] = Field(
        default_factory=list,
        description="environment variables an entry's source.api_key may name (when it is not "
        "in upstream_secrets); no other variable is ever read for a client",
    )
    roots: list[Path] = Field(
        default_factory=list,
        description="directories local model sources may be under, besides the data dir and "
        "the bundled models' packages",
    )
    load_failure_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="seconds a failed model load is remembered and answered without retrying",
    )


class OutboundSettings(BaseModel):
    """Which hosts the server's own HTTP calls (upstreams, callbacks) may reach."""

    allow_hosts: list[str] = Field(
        default_factory=list,
        description="host names or IP literals opened whatever they resolve to",
    )
    allow_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs opened (e.g. 10.0.0.0/8); non-public addresses are refused otherwise",
    )

    @field_validator("allow_networks")
    @classmethod
    def _cidrs(cls, networks: list[str]) -> list[str]:
        for net in networks:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad one
        return networks


class WorkflowSettings(BaseModel):
    callback_secret: str | None = Field(
        default=None,
        repr=False,
        description="signs the callbacks of workflows that set no callback_secret of their own",
    )
    callback_max_attempts: int = Field(default=5, ge=1, le=20)
    callback_backoff_s: float = Field(default=1.0, ge=0, description="first retry delay")
    callback_timeout_s: float = Field(default=10.0, gt=0)


class Settings(BaseSettings):
    """All settings. Construct with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="AUTOGLM_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path(".autoglm")
    storage: StorageSettings = Field(default_factory=StorageSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    workflows: WorkflowSettings = Field(default_factory=WorkflowSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)
    limits: InputLimits = Field(default_factory=InputLimits)
    register_bundled_models: bool = False
    admission_ruleset: str | None = None

    def storage_url(self) -> str:
        if self.storage.url:
            return self.storage.url
        return f"sqlite:///{(self.data_dir / 'autoglm.db').resolve()}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, the TOML file, the environment and ``overrides``."""
    path = config_file or os.environ.get("AUTOGLM_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        with open(path, "rb") as f:
            file_values = tomllib.load(f)
    merged = _deep_merge(file_values, _environment())
    merged = _deep_merge(merged, overrides)
    return Settings.model_validate(merged)


# Flat environment variables for the most used nested settings, e.g. AUTOGLM_STORAGE_URL.
_FLAT_ALIASES: dict[str, tuple[str, str]] = {"AUTOGLM_STORAGE_URL": ("storage", "url")}


def _environment() -> dict[str, Any]:
    """The settings the environment sets (``AUTOGLM_*``, nested with ``__``, and the flat
    aliases), and only those: the layer between the file and explicit arguments."""
    values = Settings().model_dump(exclude_unset=True)
    for var, (area, name) in _FLAT_ALIASES.items():
        if value := os.environ.get(var):
            values = _deep_merge(values, {area: {name: value}})
    return values


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
