"""Text task types: ``text-generation``, ``text-classification`` and ``embedding``.

Handlers get their model from the ``"models"`` service: ``ctx.service("models").lease(name)``
is a context manager yielding the wrapper :class:`~open_autoglm.ml.text.model_loader.TextModelLoader`
built (Embedder / Generator / Classifier). The model math lives in ``ml/text``; this module only
validates params and input, calls the wrapper and shapes JSON results.

Models with backend ``openai`` are forwarded to their upstream (``embedding`` and
``text-generation``, chat or plain prompts), so ``/v1/infer`` and ``/v1/tasks`` serve them too;
the upstream's circuit breaker applies (an open circuit fails the task with ``circuit_open``).

Input is one string or a list of strings; ``text-generation`` also takes ``{"messages": [...]}``
(chat) or a list of such objects.

Batch handlers take contexts that share a model (and the ``batch_key`` params) and return one
result per context, in order, or yield ``(index, result)`` pairs as results are ready. An item
whose own input is bad comes back as the exception instance in its place, so one bad request
does not fail its batch mates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from queue import SimpleQueue
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from open_autoglm.errors import (
    AutoGLMError,
    RateLimitedError,
    TaskCancelledError,
    TaskFailedError,
    ValidationError,
)
from open_autoglm.ml.text.sampling import DEFAULTS  # imports no torch
from open_autoglm.tasks.base import BatchResults, TaskContext, TaskType

__all__ = [
    "ClassificationParams",
    "EmbeddingParams",
    "GenerationParams",
    "classify_handler",
    "embed_batch_handler",
    "embed_handler",
    "generate_batch_handler",
    "generate_handler",
    "text_task_types",
]

MAX_INPUTS = 256
MAX_TOKENS = 4096
# How often a generation handler looks at ctx.is_cancelled() while the engine decodes.
_CANCEL_POLL_SECONDS = 0.05


class GenerationParams(BaseModel):
    """Generation params; the defaults are :data:`~open_autoglm.ml.text.sampling.DEFAULTS`,
    the same for this task type and the OpenAI routes."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(DEFAULTS.max_tokens, ge=1, le=MAX_TOKENS)
    temperature: float = Field(DEFAULTS.temperature, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(DEFAULTS.top_p, gt=0.0, le=1.0)
    top_k: int = Field(DEFAULTS.top_k, ge=0, description="0 = no top-k filter")
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = None
    frequency_penalty: float = Field(DEFAULTS.frequency_penalty, ge=-2.0, le=2.0)
    presence_penalty: float = Field(DEFAULTS.presence_penalty, ge=-2.0, le=2.0)
    response_format: dict[str, Any] | None = Field(
        None,
        description="{'type': 'json_object'} or {'type': 'json_schema', 'json_schema': "
        "{'name', 'schema'}}: the output follows it (constrained decoding; GGUF models)",
    )
    tools: list[dict[str, Any]] | None = Field(
        None, description="OpenAI function tools the model may call (GGUF models)"
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="'none', 'auto' (default with tools), 'required' or a named function"
    )
    chat: bool | None = Field(
        None, description="apply the chat template; None = if the model has one"
    )
    stream: bool = Field(
        False,
        description="emit each decoded piece of text as a 'progress' event with data "
        "{'delta': str, 'index': input item} while the task runs (the result is unchanged)",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must be non-empty")
        return value

    def grammar_and_tools(self) -> tuple[str | None, tuple[Any, ...] | None]:
        """The grammar to decode with and the tools to show the model (400s name the field)."""
        from open_autoglm.ml.text.structured import grammar_for_response_format
        from open_autoglm.ml.text.tool_calls import plan_tools

        grammar = grammar_for_response_format(
            self.response_format, loc=["params", "response_format"]
        )
        if self.tools is None:
            if self.tool_choice not in (None, "none"):
                raise ValidationError(
                    "tool_choice needs tools", details=[{"loc": ["params", "tool_choice"],
                                                         "msg": "no tools given"}]
                )  # fmt: skip
            return grammar, None
        if grammar is not None:
            raise ValidationError(
                "response_format and tools cannot be combined in one request",
                details=[{"loc": ["params", "response_format"], "msg": "not with tools"}],
            )
        plan = plan_tools(self.tools, self.tool_choice)
        return plan.grammar, plan.tools or None


class EmbeddingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    normalize: bool = True
    pooling: Literal["mean", "cls", "max"] | None = Field(
        None, description="override the model's pooling config"
    )


class ClassificationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(1, ge=1, description="labels per text; null = all")
    labels: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None,
        min_length=2,
        max_length=100,
        description="zero-shot: score each text against these labels with an embedding model",
    )


# -- input ---------------------------------------------------------------------------------


def _texts(value: Any) -> tuple[list[str], bool]:
    """Input as a list of strings, and whether it was a single string."""
    if isinstance(value, str):
        return [value], True
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) > MAX_INPUTS:
            raise ValidationError(f"at most {MAX_INPUTS} inputs per task, got {len(value)}")
        return list(value), False
    raise ValidationError(
        "input must be a string or a non-empty list of strings",
        details=[{"loc": ["input"], "msg": "expected str or list[str]"}],
    )


def _prompts(value: Any) -> tuple[list[dict[str, Any]], bool]:
    """Generation input as ``[{"prompt": str} | {"messages": [...]}]`` and whether single."""

    def one(item: Any) -> dict[str, Any] | None:
        if isinstance(item, str):
            return {"prompt": item}
        if isinstance(item, Mapping) and isinstance(item.get("messages"), list):
            messages = [_message(m) for m in item["messages"]]
            if messages and all(m is not None for m in messages):
                return {"messages": messages}
        return None

    single = one(value)
    if single is not None:
        return [single], True
    if isinstance(value, list) and value and len(value) <= MAX_INPUTS:
        items = [one(v) for v in value]
        if all(i is not None for i in items):
            return items, False  # type: ignore[return-value]
    raise ValidationError(
        "input must be a prompt string, {'messages': [{'role', 'content'}, ...]} or a list of "
        f"those (at most {MAX_INPUTS})",
        details=[{"loc": ["input"], "msg": "bad generation input"}],
    )


def _message(m: Any) -> dict[str, Any] | None:
    """A chat message as the template takes it, or None when it is malformed.

    ``content`` is a string, or null on an assistant turn that has ``tool_calls``; a ``tool``
    turn may carry ``tool_call_id`` and ``name``.
    """
    if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
        return None
    content, calls = m.get("content"), m.get("tool_calls")
    if not isinstance(content, str) and not (content is None and calls):
        return None
    out: dict[str, Any] = {"role": m["role"], "content": content or ""}
    if calls is not None:
        if not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls):
            return None
        out["tool_calls"] = [dict(c) for c in calls]
    for key in ("tool_call_id", "name"):
        if isinstance(m.get(key), str):
            out[key] = m[key]
    return out


P = TypeVar("P", bound=BaseModel)


def _params(ctx: TaskContext, model: type[P]) -> P:
    """``ctx.params`` as ``model`` (the scheduler normally validated it with this model already)."""
    params: Any = ctx.params
    if isinstance(params, model):
        return params
    raw = params.model_dump() if isinstance(params, BaseModel) else (params or {})
    try:
        return model.model_validate(raw)
    except PydanticValidationError as exc:
        raise ValidationError(
            "invalid params",
            details=[{"loc": ["params", *e["loc"]], "msg": e["msg"]} for e in exc.errors()],
        ) from exc


def _lease(ctx: TaskContext) -> Any:
    if not ctx.model:
        raise ValidationError("this task type needs a model")
    try:
        models = ctx.service("models")
    except KeyError:
        raise TaskFailedError(
            "no models service in this executor; text tasks must run in-process (thread mode)"
        ) from None
    return models.lease(ctx.model)


def _expect(model: Any, kind: str, ctx: TaskContext) -> None:
    role = getattr(model, "role", None)
    if getattr(role, "value", role) != kind:
        raise ValidationError(f"model {ctx.model!r} is not loaded for {kind} (role {role})")


# -- upstream (backend "openai") -------------------------------------------------------------


def _upstream(ctx: TaskContext) -> Any:
    """The model's upstream forwarder when its backend is ``openai``, else None."""
    if not ctx.model:
        return None
    try:
        models = ctx.service("models")
    except KeyError:
        return None
    from open_autoglm.spec.model import ModelBackend

    spec_of = getattr(models, "spec", None)  # a bare model cache serves local models only
    if spec_of is None or spec_of(ctx.model).backend is not ModelBackend.OPENAI:
        return None
    return models.upstream(ctx.model)


def _upstream_call(upstream: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, data = upstream.post_sync(path, body)
    if status < 400 and isinstance(data, dict):
        return data
    error = data.get("error") if isinstance(data, dict) else None
    message = (error or {}).get("message") if isinstance(error, dict) else None
    text = f"upstream answered {status}: {message or data}"
    if status == 429:  # the upstream's own limit: not the request's fault, try again later
        raise RateLimitedError(text)
    if 400 <= status < 500:
        raise ValidationError(text)
    raise TaskFailedError(text, retryable=True)


def _upstream_embed(upstream: Any, texts: list[str]) -> dict[str, Any]:
    data = _upstream_call(upstream, "/embeddings", {"input": texts, "encoding_format": "float"})
    rows = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
    vectors = [list(map(float, row["embedding"])) for row in rows]
    if len(vectors) != len(texts):
        raise TaskFailedError(f"upstream returned {len(vectors)} embeddings for {len(texts)}")
    tokens = int((data.get("usage") or {}).get("prompt_tokens", 0))
    return {
        "embeddings": vectors,
        "dimension": len(vectors[0]) if vectors else 0,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _upstream_generate(upstream: Any, ctx: TaskContext) -> dict[str, Any]:
    """One completions / chat call per input item, shaped like a local generation result."""
    items, _ = _prompts(ctx.input)
    p = _params(ctx, GenerationParams)
    sampling: dict[str, Any] = {"max_tokens": p.max_tokens, "temperature": p.temperature,
                                "top_p": p.top_p}  # fmt: skip
    if p.stop:
        sampling["stop"] = p.stop
    if p.seed is not None:
        sampling["seed"] = p.seed
    # The upstream enforces these itself; they are passed on, never dropped.
    for name in ("frequency_penalty", "presence_penalty", "response_format", "tools",
                 "tool_choice"):  # fmt: skip
        if name in p.model_fields_set:
            sampling[name] = getattr(p, name)
    generations = []
    for item in items:
        ctx.check_cancelled()
        if "messages" in item:
            data = _upstream_call(upstream, "/chat/completions", {**sampling, **item})
            choice = (data.get("choices") or [{}])[0]
            text = (choice.get("message") or {}).get("content") or ""
            calls = (choice.get("message") or {}).get("tool_calls")
        else:
            data = _upstream_call(upstream, "/completions", {**sampling, **item})
            choice = (data.get("choices") or [{}])[0]
            text = choice.get("text") or ""
            calls = None
        usage = data.get("usage") or {}
        prompt, completion = (
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )
        generation: dict[str, Any] = {
            "text": text,
            "finish_reason": choice.get("finish_reason") or "stop",
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }  # fmt: skip
        if calls:
            generation["tool_calls"] = calls
        generations.append(generation)
    return _generation_dicts(generations)


# -- embedding -------------------------------------------------------------------------------


def _embed(
    model: Any, texts: list[str], params: EmbeddingParams
) -> tuple[list[list[float]], list[int]]:
    vectors, counts = model.embed_with_usage(
        texts, normalize=params.normalize, pooling=params.pooling
    )
    return vectors.tolist(), counts


def _embedding_result(vectors: list[list[float]], counts: list[int]) -> dict[str, Any]:
    tokens = sum(counts)
    return {
        "embeddings": vectors,
        "dimension": len(vectors[0]) if vectors else 0,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def embed_handler(ctx: TaskContext) -> dict[str, Any]:
    texts, _ = _texts(ctx.input)
    params = _params(ctx, EmbeddingParams)
    upstream = _upstream(ctx)
    if upstream is not None:
        return _upstream_embed(upstream, texts)
    with _lease(ctx) as model:
        _expect(model, "embedding", ctx)
        return _embedding_result(*_embed(model, texts, params))


def embed_batch_handler(ctxs: list[TaskContext]) -> BatchResults:
    """Embed every context's texts in one bucketed pass (params equal by ``batch_key``).

    With a replica pool each context is its own request to the pool and is answered when its
    replica call returns, not when the whole batch has.
    """
    results: list[Any] = [None] * len(ctxs)
    spans: list[tuple[int, int, int]] = []  # (ctx index, start, end) into the joint list
    joint: list[str] = []
    for i, ctx in enumerate(ctxs):
        try:
            texts, _ = _texts(ctx.input)
        except ValidationError as exc:
            results[i] = exc
            continue
        spans.append((i, len(joint), len(joint) + len(texts)))
        joint.extend(texts)
    if not spans:
        return results
    if (upstream := _upstream(ctxs[spans[0][0]])) is not None:
        for i, start, end in spans:
            try:
                results[i] = _upstream_embed(upstream, joint[start:end])
            except AutoGLMError as exc:
                results[i] = exc
        return results
    return _embed_spans(ctxs, results, spans, joint)


def _embed_spans(
    ctxs: list[TaskContext],
    results: list[Any],
    spans: list[tuple[int, int, int]],
    joint: list[str],
) -> Iterator[tuple[int, Any]]:
    yield from ((i, r) for i, r in enumerate(results) if r is not None)  # bad inputs first
    first = ctxs[spans[0][0]]
    params = _params(first, EmbeddingParams)
    with _lease(first) as model:
        _expect(model, "embedding", first)
        embed_many = getattr(model, "embed_many", None)
        if embed_many is None:  # in-process: one bucketed pass over everything
            vectors, counts = _embed(model, joint, params)
            for i, start, end in spans:
                yield i, _embedding_result(vectors[start:end], counts[start:end])
            return
        futures = embed_many(
            [joint[start:end] for _, start, end in spans],
            normalize=params.normalize,
            pooling=params.pooling,
        )
        # In completion order; the pool's futures are Promises, which as_completed can't watch.
        ready: SimpleQueue[int] = SimpleQueue()
        for k, future in enumerate(futures):
            future.add_done_callback(lambda _, k=k: ready.put(k))
        for _ in futures:
            k = ready.get()
            exc = futures[k].exception()
            if exc is not None:
                yield spans[k][0], exc
                continue
            vectors, counts = futures[k].result()
            yield spans[k][0], _embedding_result(vectors.tolist(), counts)


# -- generation ------------------------------------------------------------------------------


def _requests(ctx: TaskContext) -> tuple[list[Any], bool]:
    from open_autoglm.ml.text.decode_batch import GenerationRequest
    from open_autoglm.ml.text.sampling import SamplingParams

    items, single = _prompts(ctx.input)
    p = _params(ctx, GenerationParams)
    sampling = SamplingParams(
        max_tokens=p.max_tokens,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        stop=tuple(p.stop),
        seed=p.seed,
        frequency_penalty=p.frequency_penalty,
        presence_penalty=p.presence_penalty,
    )
    grammar, tools = p.grammar_and_tools()
    common: dict[str, Any] = {"params": sampling, "chat": p.chat, "grammar": grammar,
                              "tools": tools}  # fmt: skip
    if not p.stream:
        return [GenerationRequest(**common, **item) for item in items], single
    return [
        GenerationRequest(**common, on_delta=_delta_events(ctx, i, p.max_tokens), **item)
        for i, item in enumerate(items)
    ], single


def _delta_events(ctx: TaskContext, index: int, max_tokens: int) -> Any:
    """An engine ``on_delta`` callback that reports each piece of text as a progress event."""
    limit = max(1, max_tokens)
    seen = [0]

    def emit(delta: str) -> None:
        seen[0] += 1
        ctx.progress(min(1.0, seen[0] / limit), delta=delta, index=index)

    return emit


def _generation_result(outcomes: list[Any], requests: Sequence[Any]) -> dict[str, Any]:
    from open_autoglm.ml.text.tool_calls import parse_tool_calls

    generations = []
    for outcome, request in zip(outcomes, requests, strict=True):
        g = outcome.to_dict()
        if request.tools:  # a call comes back as OpenAI tool_calls, not as text
            content, calls = parse_tool_calls(g["text"])
            if calls:
                g.update(text=content or "", tool_calls=calls, finish_reason="tool_calls")
        generations.append(g)
    return _generation_dicts(generations)


def _generation_dicts(generations: list[dict[str, Any]]) -> dict[str, Any]:
    prompt = sum(g["usage"]["prompt_tokens"] for g in generations)
    completion = sum(g["usage"]["completion_tokens"] for g in generations)
    result: dict[str, Any] = {
        "generations": generations,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    if len(generations) == 1:
        result["text"] = generations[0]["text"]
        result["finish_reason"] = generations[0]["finish_reason"]
        if "tool_calls" in generations[0]:
            result["tool_calls"] = generations[0]["tool_calls"]
    return result


def _wait(ctx: TaskContext, engine: Any, futures: Sequence[Future[Any]]) -> list[Any]:
    """Results of ``futures``; on task cancellation, stop them in the engine and raise."""
    pending = list(futures)
    while pending:
        done, _ = wait(pending, timeout=_CANCEL_POLL_SECONDS, return_when=FIRST_COMPLETED)
        pending = [f for f in pending if f not in done]
        if pending and ctx.is_cancelled():
            for future in pending:
                engine.cancel(future)
            ctx.check_cancelled()
    out = []
    for future in futures:
        exc = future.exception()
        if exc is not None:
            if isinstance(exc, ValidationError | TaskFailedError | TaskCancelledError):
                raise exc
            raise TaskFailedError(f"generation failed: {exc}", retryable=True) from exc
        out.append(future.result())
    return out


def generate_handler(ctx: TaskContext) -> dict[str, Any]:
    """Generate through the model's shared engine, so concurrent tasks decode together."""
    upstream = _upstream(ctx)
    if upstream is not None:
        return _upstream_generate(upstream, ctx)
    requests, _ = _requests(ctx)
    ctx.check_cancelled()
    with _lease(ctx) as model:
        _expect(model, "text-generation", ctx)
        engine = model.engine()
        futures = [engine.submit(r) for r in requests]
        return _generation_result(_wait(ctx, engine, futures), requests)


def generate_batch_handler(ctxs: list[TaskContext]) -> list[Any]:
    """Submit every context's requests at once; each keeps its own sampling params."""
    results: list[Any] = [None] * len(ctxs)
    if ctxs and _upstream(ctxs[0]) is not None:
        for i, ctx in enumerate(ctxs):  # one upstream call each; the upstream batches
            try:
                results[i] = generate_handler(ctx)
            except AutoGLMError as exc:
                results[i] = exc
        return results
    planned: list[tuple[int, list[Any]]] = []
    for i, ctx in enumerate(ctxs):
        try:
            planned.append((i, _requests(ctx)[0]))
        except ValidationError as exc:
            results[i] = exc
    if planned:
        first = ctxs[planned[0][0]]
        with _lease(first) as model:
            _expect(model, "text-generation", first)
            engine = model.engine()
            submitted = [(i, reqs, [engine.submit(r) for r in reqs]) for i, reqs in planned]
            for i, reqs, futures in submitted:
                try:
                    results[i] = _generation_result(_wait(ctxs[i], engine, futures), reqs)
                except (ValidationError, TaskFailedError, TaskCancelledError) as exc:
                    results[i] = exc
    return results


# -- classification --------------------------------------------------------------------------


def classify_handler(ctx: TaskContext) -> dict[str, Any]:
    texts, _ = _texts(ctx.input)
    params = _params(ctx, ClassificationParams)
    with _lease(ctx) as model:
        if params.labels is not None:
            return {"predictions": _zero_shot(model, texts, params.labels, params.top_k, ctx)}
        _expect(model, "text-classification", ctx)
        return {"predictions": model.classify(texts, top_k=params.top_k)}


def _zero_shot(
    model: Any, texts: list[str], labels: list[str], top_k: int | None, ctx: TaskContext
) -> list[list[dict[str, Any]]]:
    from open_autoglm.ml.text.zero_shot import zero_shot_predictions

    role = getattr(model, "role", None)
    if getattr(role, "value", role) != "embedding":
        raise ValidationError(
            f"params.labels needs an embedding model; {ctx.model!r} is not one",
            details=[{"loc": ["params", "labels"], "msg": "zero-shot needs an embedding model"}],
        )
    vectors = model.embed([*texts, *labels], normalize=True)  # (texts + labels, dim)
    return zero_shot_predictions(vectors[: len(texts)], vectors[len(texts) :], labels, top_k=top_k)


def text_task_types() -> list[TaskType]:
    """The built-in text task types, for the builtin plugin to register."""
    return [
        TaskType(
            name="text-generation",
            handler=generate_handler,
            params_model=GenerationParams,
            description="Generate text with a causal language model (greedy or sampled).",
            requires_model=True,
            requires_input=True,
            batch_handler=generate_batch_handler,
            # Sampling params are per request inside a decode batch, so any two may share one.
            batch_key=(),
            # The model's engine decodes on its own threads (llama.cpp: the executor's CPU
            # allotment); a batch's thread only waits for its results. An eighth of a CPU
            # lets requests that arrive mid-decode start a batch of their own and join the
            # running sequences at the next step instead of queueing behind a whole CPU.
            default_resources={"cpu": 0.125},
        ),
        TaskType(
            name="text-classification",
            handler=classify_handler,
            params_model=ClassificationParams,
            description="Classify texts; labels with softmax scores, best first.",
            requires_model=True,
            requires_input=True,
        ),
        TaskType(
            name="embedding",
            handler=embed_handler,
            params_model=EmbeddingParams,
            description="Embed texts into vectors (pooled, normalised by default).",
            requires_model=True,
            requires_input=True,
            batch_handler=embed_batch_handler,
            batch_key=("normalize", "pooling"),
            # The forward runs in the model's replica processes (one per CPU, bounded by the
            # pool, see executors/workers/pool.py); the batch's thread only waits on a pipe. A
            # quarter CPU lets a few more batches than replicas be in flight, and the pool
            # merges the ones waiting for a replica into its next call.
            default_resources={"cpu": 0.25},
        ),
    ]
