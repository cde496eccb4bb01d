"""The OpenAI-compatible routes against real server processes, through the official client."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from helpers.services import ServerProcess
from open_autoglm.client import Client
from open_autoglm.errors import (
    BulkheadFullError,
    CircuitOpenError,
    NotFoundError,
    RateLimitedError,
)

# Tiny models are ~0.6-0.66 MB loaded (oneDNN packed copies included): any two fit in
# 1.5 MB, all three do not.
BUDGET_MB = "1.5"
UPSTREAM_THRESHOLD = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    from open_autoglm.ml.text.tiny import (
        build_tiny_bert_classifier,
        build_tiny_bert_embedder,
        build_tiny_gpt2,
    )

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("openai-tiny")
    return {
        "gen": build_tiny_gpt2(root / "gen"),
        "emb": build_tiny_bert_embedder(root / "emb"),
        "cls": build_tiny_bert_classifier(root / "cls"),
    }


TASKS = {"gen": ["text-generation"], "emb": ["embedding"], "cls": ["text-classification"]}
# In-process models here: these tests are about the routes, and the budget test reloads
# models often (replica processes are tested in tests/executors/test_replicas.py).
ENV = {"OMP_NUM_THREADS": "1", "AUTOGLM_EXECUTOR__THREADS": "4", "AUTOGLM_MODELS__REPLICAS": "0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny: dict[str, Path]) -> Iterator[str]:
    env = {
        **ENV,
        "AUTOGLM_MODELS__MEMORY_BUDGET_MB": BUDGET_MB,
        "AUTOGLM_MODELS__UPSTREAM_FAILURE_THRESHOLD": str(UPSTREAM_THRESHOLD),
        "AUTOGLM_MODELS__UPSTREAM_RESET_S": "60",
        # the upstreams these tests register listen on loopback: opened for them only
        "AUTOGLM_OUTBOUND__ALLOW_NETWORKS": '["127.0.0.0/8"]',
    }
    proc = ServerProcess(tmp_path_factory.mktemp("openai-server"), env=env).start()
    try:
        with Client(proc.url) as c:
            for name, path in tiny.items():  # weights go up as artifacts, like a user would
                c.upload_model(str(path), name=name, task_types=TASKS[name])
        yield proc.url
    finally:
        proc.stop()


def oai(url: str, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", **kw)  # type: ignore[arg-type]


def test_models_list_in_openai_shape(server: str) -> None:
    models = {m.id: m for m in oai(server).models.list()}
    assert set(models) >= {"gen", "emb", "cls"}
    assert models["gen"].owned_by == "open-autoglm"
    raw = httpx.get(server + "/v1/models").json()
    assert raw["object"] == "list" and {"hits", "misses", "evictions"} <= set(raw["cache"])
    with pytest.raises(openai.NotFoundError) as info:
        oai(server).models.retrieve("nope")
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_embeddings_float_and_base64_agree(server: str) -> None:
    client = oai(server)
    texts = ["graph neural networks", "the queue waits", "x"]
    default = client.embeddings.create(model="emb", input=texts)  # the client asks for base64
    floats = client.embeddings.create(model="emb", input=texts, encoding_format="float")
    a = np.array([d.embedding for d in default.data])
    b = np.array([d.embedding for d in floats.data])
    assert a.shape == (3, b.shape[1]) and b.shape[1] > 8
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 3
    raw = httpx.post(
        server + "/v1/embeddings",
        json={"model": "emb", "input": "x", "encoding_format": "base64"},
        timeout=120,
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, b[2], atol=1e-6)


def test_completions_and_chat(server: str) -> None:
    client = oai(server)
    out = client.completions.create(model="gen", prompt="the model", max_tokens=6, temperature=0)
    again = client.completions.create(model="gen", prompt="the model", max_tokens=6, temperature=0)
    assert out.choices[0].text == again.choices[0].text  # greedy is deterministic
    assert out.choices[0].finish_reason in ("length", "stop")
    assert out.usage.completion_tokens <= 6 and out.usage.prompt_tokens > 0
    many = client.completions.create(
        model="gen", prompt=["the model", "a graph"], max_tokens=4, temperature=0
    )
    assert [c.index for c in many.choices] == [0, 1]
    assert (
        many.choices[0].text
        == client.completions.create(model="gen", prompt="the model", max_tokens=4, temperature=0)
        .choices[0]
        .text
    )

    chat = client.chat.completions.create(
        model="gen", messages=[{"role": "user", "content": "hello"}], max_tokens=5, temperature=0
    )
    assert chat.choices[0].message.role == "assistant"
    # The chat template makes the prompt longer than the bare message.
    assert chat.usage.prompt_tokens > len("hello".split())
    sampled = {
        client.chat.completions.create(
            model="gen",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            temperature=1.0,  # the default is greedy (one set of defaults for every route)
            seed=s,
        )
        .choices[0]
        .message.content
        for s in range(4)
    }
    assert len(sampled) > 1


def test_streaming_matches_non_streaming(server: str) -> None:
    client = oai(server)
    messages = [{"role": "user", "content": "tell me about graphs"}]
    whole = client.chat.completions.create(
        model="gen", messages=messages, max_tokens=10, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model="gen",
            messages=messages,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # The stream ran as a scheduled task whose progress events carried the deltas.
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
    task_id = chunks[0].id.removeprefix("chatcmpl-")
    with Client(server) as c:
        deadline = time.monotonic() + 10
        while True:  # an online task's row is written off the hot path, once it ends
            try:
                task = c.get(task_id)
                break
            except NotFoundError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        events = c.events(task_id)
    assert task["task_type"] == "text-generation" and task["status"] == "succeeded"
    assert "".join(e["data"]["delta"] for e in events if e["kind"] == "progress") == text

    plain = client.completions.create(model="gen", prompt="a b", max_tokens=7, temperature=0)
    streamed = client.completions.create(
        model="gen", prompt="a b", max_tokens=7, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
    with httpx.stream(
        "POST",
        server + "/v1/completions",
        json={"model": "gen", "prompt": "a", "max_tokens": 3, "stream": True},
    ) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_errors_in_openai_shape(server: str) -> None:
    client = oai(server, max_retries=0)
    with pytest.raises(openai.NotFoundError) as nf:
        client.completions.create(model="missing", prompt="x", max_tokens=2)
    assert nf.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as wrong:
        client.embeddings.create(model="gen", input="x")
    assert "not embedding" in wrong.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="gen", prompt="x", max_tokens=2, temperature=3.5)
    assert bad.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="exceeds the model context"):
        client.completions.create(model="gen", prompt="x", max_tokens=4000, temperature=0)
    body = httpx.post(
        server + "/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    ).json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"


def test_concurrent_generation_equals_each_alone(server: str) -> None:
    client = oai(server)
    words = "graph node edge model token batch queue worker vector label".split()
    prompts = [" ".join(words[: 1 + i % 10]) * (1 + i % 3) for i in range(32)]
    lengths = [3 + (i * 7) % 17 for i in range(32)]

    def one(i: int) -> str:
        out = client.completions.create(
            model="gen", prompt=prompts[i], max_tokens=lengths[i], temperature=0
        )
        return out.choices[0].text

    alone = [one(i) for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(one, range(32)))
    assert together == alone
    decode = httpx.get(server + "/v1/models/registry").json()["cache"]["models"]["gen"]["decode"]
    assert decode["max_active"] > 1  # the requests really decoded together


def _evictions(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("autoglm_model_cache_evictions_total"):
            return float(line.split()[-1])
    raise AssertionError("no eviction counter in /metrics")


def test_memory_budget_evicts_and_serves_every_request(server: str) -> None:
    client = oai(server, max_retries=0)
    before = _evictions(server)
    for _ in range(2):
        client.embeddings.create(model="emb", input="a")
        client.completions.create(model="gen", prompt="a", max_tokens=2, temperature=0)
        r = httpx.post(
            server + "/v1/infer",
            json={"task_type": "text-classification", "model": "cls", "input": ["good"]},
            timeout=120,  # after an eviction the model's replica processes start again
        )
        assert r.status_code == 200, r.text
    assert _evictions(server) - before >= 2
    cache = httpx.get(server + "/v1/models").json()["cache"]
    assert cache["used_bytes"] <= cache["budget_bytes"] and cache["load_failures"] == 0
    states = {m["name"]: m["state"] for m in Client(server).list_models()}
    assert sorted(states[n] for n in TASKS).count("loaded") == 2


def test_upstream_backend_and_circuit_breaker(
    server: str, tiny: dict[str, Path], tmp_path: Path
) -> None:
    upstream = ServerProcess(tmp_path / "upstream", env=ENV).start()
    try:
        with Client(upstream.url) as c:
            c.upload_model(str(tiny["gen"]), name="gen-up", task_types=["text-generation"])
            c.upload_model(str(tiny["emb"]), name="emb-up", task_types=["embedding"])
        with Client(server) as c:
            for name, remote, tasks in (
                ("remote-gen", "gen-up", ["text-generation", "chat"]),
                ("remote-emb", "emb-up", ["embedding"]),
            ):
                c.register_model(
                    {
                        "name": name,
                        "backend": "openai",
                        "source": {
                            "base_url": upstream.url + "/v1",
                            "model": remote,
                            # A first call loads the model upstream, slow on a busy
                            # machine; the breaker below trips on a dead upstream instead.
                            "timeout_s": 120,
                        },
                        "task_types": tasks,
                    }
                )
        proxy, direct = oai(server, max_retries=0), oai(upstream.url, max_retries=0)
        kw = {"prompt": "the graph", "max_tokens": 6, "temperature": 0}
        via = proxy.completions.create(model="remote-gen", **kw)  # type: ignore[call-overload]
        assert via.model == "remote-gen"
        assert (
            via.choices[0].text == direct.completions.create(model="gen-up", **kw).choices[0].text
        )  # type: ignore[call-overload]
        streamed = proxy.chat.completions.create(
            model="remote-gen",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            temperature=0,
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert _bulkhead(server, "remote-gen")["in_flight"] == 0  # the stream gave its slot back
        emb = proxy.embeddings.create(model="remote-emb", input=["a", "b"])
        assert len(emb.data) == 2
        # Upstream models serve task types too: /v1/infer and durable /v1/tasks.
        with Client(server) as c:
            gen = c.infer(task_type="text-generation", model="remote-gen", input="the graph",
                          params={"max_tokens": 6, "temperature": 0})  # fmt: skip
            assert gen["text"] == via.choices[0].text
            assert gen["usage"]["completion_tokens"] == via.usage.completion_tokens  # type: ignore[union-attr]
            task = c.run(task_type="embedding", model="remote-emb", input=["a", "b"], timeout=30)
            np.testing.assert_allclose(
                task["result"]["embeddings"], [d.embedding for d in emb.data], atol=1e-6
            )
    finally:
        upstream.kill()

    statuses = []
    for _ in range(UPSTREAM_THRESHOLD):
        with pytest.raises(openai.APIStatusError) as info:
            proxy.completions.create(model="remote-gen", **kw)  # type: ignore[call-overload]
        statuses.append((info.value.status_code, info.value.body["code"]))  # type: ignore[index]
    assert statuses == [(503, "unavailable")] * UPSTREAM_THRESHOLD
    with pytest.raises(openai.APIStatusError) as info:
        proxy.completions.create(model="remote-gen", **kw)  # type: ignore[call-overload]
    assert (info.value.status_code, info.value.body["code"]) == (503, "circuit_open")  # type: ignore[index]
    # Refused by the open breaker itself, without a call to the upstream: counted as rejected.
    card = {m["id"]: m for m in httpx.get(server + "/v1/models").json()["data"]}["remote-gen"]
    assert card["upstream"]["rejected"] == 1
    with Client(server) as c, pytest.raises(CircuitOpenError) as refused:
        c.infer(task_type="text-generation", model="remote-gen", input="x")
    assert "circuit open" in refused.value.message
    assert int(info.value.response.headers["retry-after"]) >= 1
    cards = {m["id"]: m for m in httpx.get(server + "/v1/models").json()["data"]}
    assert cards["remote-gen"]["upstream"]["circuit"] == "open"
    assert (
        'autoglm_upstream_circuit_open{model="remote-gen"} 1.0'
        in httpx.get(server + "/metrics").text
    )
    # Another upstream model has its own breaker: still trying (and failing) on its own.
    with pytest.raises(openai.APIStatusError) as other:
        proxy.embeddings.create(model="remote-emb", input="a")
    assert other.value.body["code"] == "unavailable"  # type: ignore[index]


class GatedUpstream:
    """An OpenAI-compatible embeddings server on loopback that answers only when let go.

    A real HTTP server, so the platform's bulkhead is driven through its real forwarding path;
    its slowness is held by the test instead of timed, which no real model here can be."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.arrived = 0
        self.status = 200  # what it answers once let go
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    outer.arrived += 1
                outer.gate.wait(30)
                if outer.status != 200:
                    self.send_error(outer.status, "slow down")
                    return
                body = json.dumps(
                    {
                        "object": "list",
                        "model": "gated",
                        "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}],
                        "usage": {"prompt_tokens": 1, "total_tokens": 1},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def _bulkhead(url: str, model: str) -> dict[str, int]:
    """The model's bulkhead stats; empty until its first call creates its forwarder."""
    cards = {m["id"]: m for m in httpx.get(url + "/v1/models").json()["data"]}
    return cards[model].get("upstream", {}).get("bulkhead", {})  # type: ignore[no-any-return]


def test_a_slow_upstream_holds_only_its_bulkhead(server: str) -> None:
    upstream = GatedUpstream()
    try:
        Client(server).register_model(
            {
                "name": "slow-emb",
                "backend": "openai",
                "source": {
                    "base_url": upstream.url + "/v1",
                    "model": "gated",
                    "max_concurrency": 2,
                    "max_waiting": 1,
                },
                "task_types": ["embedding"],
            }
        )
        body = {"model": "slow-emb", "input": "held"}
        with ThreadPoolExecutor(3) as pool:
            held = [
                pool.submit(httpx.post, server + "/v1/embeddings", json=body, timeout=30)
                for _ in range(3)
            ]
            deadline = time.monotonic() + 15
            while (upstream.arrived, _bulkhead(server, "slow-emb").get("waiting")) != (2, 1):
                assert time.monotonic() < deadline, (
                    upstream.arrived,
                    _bulkhead(server, "slow-emb"),
                )
                time.sleep(0.02)
            # Two calls inside, one in line: the next is refused at once, in OpenAI's shape:
            # at the door because the line is full, not after waiting its turn in it.
            refused = httpx.post(server + "/v1/embeddings", json=body, timeout=30)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "bulkhead_full"
            assert refused.json()["error"]["type"] == "rate_limit_error"
            message = refused.json()["error"]["message"]
            assert "2 of 2 in flight, 1 waiting; the line is full (1)" in message, message
            stats = _bulkhead(server, "slow-emb")  # nothing has been released yet
            assert (stats["in_flight"], stats["waiting"], stats["waited"]) == (2, 1, 0)
            assert stats["rejected"] == 1
            assert int(refused.headers["retry-after"]) >= 1
            # The task path (a worker thread forwarding) meets the same bound, as a typed error.
            with Client(server) as c, pytest.raises(BulkheadFullError) as typed:
                c.infer(task_type="embedding", model="slow-emb", input="held")
            assert "in flight" in typed.value.message and typed.value.retry_after >= 1
            # Models behind other bulkheads are served meanwhile.
            other = oai(server, max_retries=0).embeddings.create(model="emb", input="free")
            assert len(other.data[0].embedding) > 0
            # A durable job that allows retries is refused the same way, then retried with
            # backoff (0.5 s first) until the upstream has room again.
            with Client(server) as c:
                job = c.submit(
                    task_type="embedding", model="slow-emb", input="later", max_retries=5
                )
            while _bulkhead(server, "slow-emb")["rejected"] < 3:
                assert time.monotonic() < deadline + 15, _bulkhead(server, "slow-emb")
                time.sleep(0.01)
            assert upstream.arrived == 2
            upstream.gate.set()
            answers = [f.result(timeout=30) for f in held]
        assert [a.status_code for a in answers] == [200, 200, 200]
        with Client(server) as c:
            done = c.wait(job["id"], timeout=60)
            events = c.events(job["id"])
        assert done["status"] == "succeeded" and done["attempts"] >= 2
        assert done["result"]["embeddings"] == [[0.6, 0.8]]
        retries = [e["data"] for e in events if e["data"].get("reason") == "retry"]
        assert retries and retries[0]["error"]["code"] == "bulkhead_full"
        assert upstream.arrived == 4  # the one in line got the first slot that freed, then the job
        stats = _bulkhead(server, "slow-emb")
        assert (stats["in_flight"], stats["waiting"], stats["waited"]) == (0, 0, 1)
        assert stats["rejected"] == 2 + len(retries) and stats["peak_in_flight"] == 2
        metrics = httpx.get(server + "/metrics").text
        assert (
            f'autoglm_upstream_bulkhead_rejected_total{{model="slow-emb"}} {stats["rejected"]}.0'
            in metrics
        )
        assert 'autoglm_upstream_in_flight{model="slow-emb"} 0.0' in metrics
        # The upstream's own 429 is a rate limit to come back after, not a bad request.
        upstream.status = 429
        with Client(server) as c, pytest.raises(RateLimitedError, match="upstream answered 429"):
            c.infer(task_type="embedding", model="slow-emb", input="too soon")
    finally:
        upstream.close()
