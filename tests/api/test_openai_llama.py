"""The OpenAI routes over a GGUF model served by llama.cpp, in a real server process, through
the official ``openai`` client: greedy equality with llama-cpp-python, tool-call round trips,
structured outputs, refused parameters and a client that disconnects mid-stream."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from helpers.services import ServerProcess
from open_autoglm.client import Client

N_CTX = 1024
ENV = {"OMP_NUM_THREADS": "1", "AUTOGLM_EXECUTOR__CPU": "1", "AUTOGLM_MODELS__REPLICAS": "0"}
QUESTIONS = [
    "What is a graph?",
    "Name three colours.",
    "Say hello in French.",
    "Count to five.",
    "What is the capital of Italy?",
    "Describe the sea in one sentence.",
    "Why is the sky blue?",
    "Give me a word that rhymes with cat.",
]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc = ServerProcess(tmp_path_factory.mktemp("llama-server"), env=ENV).start()
    try:
        with Client(proc.url) as c:
            c.register_model(
                {
                    "name": "smollm2",
                    "source": "bundled:smollm2",
                    "task_types": ["text-generation", "chat"],
                    "options": {"n_ctx": N_CTX, "parallel": 8},
                }
            )
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def reference() -> Any:
    """llama-cpp-python itself on the same GGUF, greedy."""
    import llama_cpp

    from open_autoglm.ml.text.loading import bundled_smollm2_gguf

    return llama_cpp.Llama(str(bundled_smollm2_gguf()), n_ctx=N_CTX, n_threads=1, verbose=False)


def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)


def ask(client: openai.OpenAI, question: str, n: int) -> Any:
    return client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": question}],
        max_tokens=n,
        temperature=0,
    )


def _same(ours: Any, ref: dict[str, Any]) -> None:
    assert ours.choices[0].message.content == ref["choices"][0]["message"]["content"]
    assert ours.usage.prompt_tokens == ref["usage"]["prompt_tokens"]
    assert ours.usage.completion_tokens == ref["usage"]["completion_tokens"]
    assert ours.choices[0].finish_reason == ref["choices"][0]["finish_reason"]


def _reference(reference: Any, question: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = reference.create_chat_completion(
        messages=[{"role": "user", "content": question}], max_tokens=n, temperature=0
    )
    return out


GREEDY_TOKENS = 48


def test_greedy_equals_llama_cpp_alone(server: str, reference: Any) -> None:
    client = oai(server)
    for question in QUESTIONS[:3]:
        _same(ask(client, question, GREEDY_TOKENS), _reference(reference, question, GREEDY_TOKENS))


def test_greedy_equals_llama_cpp_in_a_batch_of_eight(server: str, reference: Any) -> None:
    client = oai(server)
    with ThreadPoolExecutor(8) as pool:
        batched = list(pool.map(lambda q: ask(client, q, GREEDY_TOKENS), QUESTIONS))
    for question, ours in zip(QUESTIONS, batched, strict=True):
        _same(ours, _reference(reference, question, GREEDY_TOKENS))


def _round_trip(client: openai.OpenAI, stream: bool) -> tuple[dict[str, Any], str]:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    kw: dict[str, Any] = {"model": "smollm2", "tools": [WEATHER], "temperature": 0}
    if stream:
        calls: dict[int, dict[str, Any]] = {}
        finish = None
        for chunk in client.chat.completions.create(
            messages=messages, tool_choice="required", stream=True, **kw
        ):
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += call.id or ""
                slot["name"] += call.function.name or ""
                slot["arguments"] += call.function.arguments or ""
        assert finish == "tool_calls"
        call = calls[0]
    else:
        first = client.chat.completions.create(messages=messages, tool_choice="required", **kw)
        assert first.choices[0].finish_reason == "tool_calls"
        tc = first.choices[0].message.tool_calls[0]
        call = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
    assert call["name"] == "get_weather"
    arguments = json.loads(call["arguments"])
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 degrees."},
    ]
    if stream:
        parts = [
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                messages=messages, max_tokens=40, tool_choice="none", stream=True, **kw
            )
            if c.choices
        ]
        answer = "".join(parts)
    else:
        final = client.chat.completions.create(
            messages=messages, max_tokens=40, tool_choice="none", **kw
        )
        assert final.choices[0].message.tool_calls is None
        answer = final.choices[0].message.content or ""
    return arguments, answer


def test_tool_call_round_trip_with_the_openai_client(server: str) -> None:
    client = oai(server)
    arguments, answer = _round_trip(client, stream=False)
    streamed_arguments, streamed_answer = _round_trip(client, stream=True)
    assert answer.strip() and "<tool_call>" not in answer
    assert (streamed_arguments, streamed_answer) == (arguments, answer)


def test_response_format_json_schema_through_the_route(server: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer"},
            "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 2},
        },
        "required": ["name", "age", "pets"],
    }
    out = oai(server).chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
        max_tokens=96,
    )
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), schema)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"frobnicate": 1}, "frobnicate"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": 1}},
                }
            },
            "response_format.json_schema.schema.minimum",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_an_unsupported_parameter_is_a_400_naming_it(
    server: str, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    resp = httpx.post(server + "/v1/chat/completions", json={**body, **extra}, timeout=60)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param, resp.text


def test_a_client_that_disconnects_frees_its_sequence(server: str) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 900,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", server + "/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        seen = 0
        for line in resp.iter_lines():
            seen += line.startswith("data: ")
            if seen >= 4:
                break
    decode: dict[str, Any] = {}
    for _ in range(300):  # the route cancels the task; the engine drops it at its next step
        cache = httpx.get(server + "/v1/models/registry", timeout=30).json()["cache"]
        decode = cache["models"]["smollm2"]["decode"]
        if decode["active"] == 0:
            break
        time.sleep(0.1)
    assert decode["active"] == 0
    assert decode["steps"] < 900  # it stopped well before max_tokens


def test_the_examples_in_the_generation_docs_run(server: str) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "generation.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        exec(block.replace("http://127.0.0.1:8000", server), {})
