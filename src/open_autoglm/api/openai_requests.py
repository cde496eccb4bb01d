"""The request bodies of the OpenAI-compatible routes, with what each parameter means here.

Every parameter OpenAI's API defines is a field: supported ones are honoured, and a known
parameter set to a value this server cannot honour is refused with a 400 naming it (its
``REFUSED`` rules), rather than accepted and ignored. Unknown fields are refused too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from open_autoglm import errors
from open_autoglm.ml.text.sampling import DEFAULTS  # imports no torch
from open_autoglm.tasks.text import MAX_TOKENS

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "OpenAIRequest",
    "SamplingRequest",
    "parse_request",
]


_NULL: dict[str, Any] = {"type": "null"}
# The values a refused parameter may still take (its neutral ones), for the OpenAPI contract:
# a client reading the schema sees what is served, not just the parameter's name.
_NEUTRAL_SCHEMA: dict[str, dict[str, Any]] = {
    "n": {"anyOf": [_NULL, {"const": 1}]},
    "logit_bias": {"anyOf": [_NULL, {"type": "object", "maxProperties": 0}]},
    "best_of": {"anyOf": [_NULL, {"const": 1}]},
    "logprobs": {"anyOf": [_NULL, {"const": False}, {"const": 0}]},
    "echo": {"const": False},
    "suffix": {"anyOf": [_NULL, {"const": ""}]},
    "store": {"anyOf": [_NULL, {"const": False}]},
    "modalities": {"anyOf": [_NULL, {"const": ["text"]}]},
}


def _neutral_only(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Describe each refused parameter by the values it may take (see ``REFUSED``)."""
    properties = schema.get("properties", {})
    for name, _, why in getattr(model, "REFUSED", ()):
        if name in properties:
            properties[name] = {**_NEUTRAL_SCHEMA.get(name, _NULL), "description": why}


class OpenAIRequest(BaseModel):
    # Unknown fields are refused by name (see _parse): a parameter is served or it is a 400.
    model_config = ConfigDict(extra="forbid", json_schema_extra=_neutral_only)

    model: str = Field(min_length=1, max_length=200)
    priority: int | None = Field(default=None, ge=0, le=9, description="Open-AutoGLM extension")
    # Identifiers with no effect on the output: accepted, not used.
    user: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


# Parameters the routes know but cannot honour except at their neutral value: (field,
# neutral test, why). A request setting one otherwise is a 400 naming it.
_Refusal = tuple[str, Callable[[Any], bool], str]
_REFUSED_SAMPLING: tuple[_Refusal, ...] = (
    ("n", lambda v: v in (None, 1), "one choice per request (n = 1)"),
    ("logit_bias", lambda v: not v, "logit_bias is not supported"),
    ("best_of", lambda v: v in (None, 1), "best_of is not supported"),
    ("logprobs", lambda v: not v, "log probabilities are not returned"),
    ("top_logprobs", lambda v: v is None, "log probabilities are not returned"),
)


class SamplingRequest(OpenAIRequest):
    temperature: float = Field(default=DEFAULTS.temperature, ge=0.0, le=2.0)
    top_p: float = Field(default=DEFAULTS.top_p, gt=0.0, le=1.0)
    top_k: int = Field(default=DEFAULTS.top_k, ge=0, description="Open-AutoGLM extension")
    n: int | None = 1
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)  # torch's seed range
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None

    REFUSED: ClassVar[tuple[_Refusal, ...]] = _REFUSED_SAMPLING

    def refuse_unsupported(self) -> None:
        """A 400 naming the first parameter set to a value this server cannot honour."""
        for name, neutral, why in self.REFUSED:
            if name in self.model_fields_set and not neutral(getattr(self, name, None)):
                raise errors.ValidationError(
                    f"unsupported parameter {name!r}: {why}",
                    details=[{"loc": [name], "msg": why}],
                )

    def params(self, max_tokens: int | None, *, chat: bool) -> dict[str, Any]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return {
            "max_tokens": max_tokens or DEFAULTS.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "stop": stop,
            "seed": self.seed,
            "frequency_penalty": self.frequency_penalty or 0.0,
            "presence_penalty": self.presence_penalty or 0.0,
            "chat": chat,
        }


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    REFUSED: ClassVar[tuple[_Refusal, ...]] = (
        *_REFUSED_SAMPLING,
        ("echo", lambda v: not v, "echo is not supported"),
        ("suffix", lambda v: not v, "suffix (insertion) is not supported"),
    )


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""

    def for_template(self) -> dict[str, Any]:
        # "developer" is OpenAI's new name for the system role; templates know "system".
        out: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text(),
        }
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


class ChatCompletionRequest(SamplingRequest):
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None

    REFUSED: ClassVar[tuple[_Refusal, ...]] = (
        *_REFUSED_SAMPLING,
        ("store", lambda v: not v, "completions are not stored for later retrieval"),
        ("modalities", lambda v: v in (None, ["text"]), "text output only"),
        ("audio", lambda v: v is None, "audio output is not supported"),
        ("prediction", lambda v: v is None, "predicted outputs are not supported"),
        ("reasoning_effort", lambda v: v is None, "not a reasoning model"),
        ("verbosity", lambda v: v is None, "verbosity is not supported"),
        ("web_search_options", lambda v: v is None, "web search is not supported"),
        ("functions", lambda v: v is None, "deprecated: use tools"),
        ("function_call", lambda v: v is None, "deprecated: use tool_choice"),
    )

    def task_params(self) -> dict[str, Any]:
        params = self.params(self.max_completion_tokens or self.max_tokens, chat=True)
        for name in ("response_format", "tools", "tool_choice"):
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        return params

    def calls_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"


class EmbeddingRequest(OpenAIRequest):
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: None = None


def parse_request(model: type[BaseModel], raw: Any) -> Any:
    try:
        body = model.model_validate(raw)
    except PydanticValidationError as exc:
        e = exc.errors(include_url=False)[0]
        param = ".".join(str(p) for p in e["loc"]) or None
        if e["type"] == "extra_forbidden":
            raise errors.ValidationError(
                f"unsupported parameter {param!r}",
                details=[{"loc": [str(p) for p in e["loc"]], "msg": "not supported"}],
            ) from None
        raise errors.ValidationError(
            f"invalid request: {param}: {e['msg']}",
            details=[{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]}],
        ) from None
    if isinstance(body, SamplingRequest):
        body.refuse_unsupported()
    return body


# -- helpers -----------------------------------------------------------------------------------
