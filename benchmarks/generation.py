"""Text generation through ``/v1/chat/completions`` against llama-cpp-python on the same GGUF.

    flock /tmp/autoglm-bench.lock .venv/bin/python benchmarks/generation.py [--threads 2]
        [--tokens 64] [--rounds 3] [--clients 8]

One run, one machine, same bundled SmolLM2-135M-Instruct GGUF, greedy, ``--tokens`` new
tokens, ``--threads`` CPU threads on both sides (the server's executor allotment):

- ``llama.cpp``: llama-cpp-python's ``Llama.create_chat_completion`` in this process, one
  stream: the reference every ratio is taken against.
- ``llama.cpp N seqs raw``: the ceiling of any server on this GGUF: llama-cpp-python's
  low-level API in this process, one context of ``--clients`` sequences, every prompt
  prefilled in one ``llama_decode`` and then one token per sequence per ``llama_decode``,
  greedy argmax in numpy; aggregate tokens/s over the wall time, prefill included.
- ``one stream``: one streaming client of the server (an ``autoglm serve`` process): tokens/s
  (completion tokens over the request's wall time) and time to first token.
- ``N clients``: ``--clients`` closed-loop clients at once (non-streaming); aggregate tokens/s
  and the median (p50) request latency.
- ``first request``: the first request after the server starts (loading the model) against
  the same request warm.
- ``transformers``: the same GGUF dequantised to safetensors (``options.runtime: torch``),
  served by the transformers engine, one stream and N clients, printed beside.

The reference and the server alternate within each round (``--rounds``) so drift of a shared
machine lands on both; a row's figures are the medians over rounds. Writes
``benchmarks/results/generation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from open_autoglm.ports import free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works, step by step.",
    "Describe a walk through a forest in autumn.",
    "Write a letter to a friend about your holiday.",
]


@contextmanager
def server(threads: int) -> Iterator[str]:
    """An ``autoglm serve`` process whose executor has ``threads`` CPUs."""
    from open_autoglm.ml.text.model_loader import default_cache_dir

    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="autoglm-gen-bench-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")},
        "HF_HUB_OFFLINE": "1",
        "AUTOGLM_EXECUTOR__CPU": str(threads),
        "AUTOGLM_MODELS__CACHE_DIR": str(default_cache_dir()),  # the safetensors conversion
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = open(RESULTS / "autoglm-generation.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "open_autoglm.cli.main", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--data-dir", str(data)],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"autoglm did not start; see {log.name}")
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def register(url: str, name: str, options: dict[str, Any]) -> None:
    entry = {
        "name": name,
        "source": "bundled:smollm2",
        "task_types": ["text-generation", "chat"],
        "options": options,
    }
    httpx.post(url + "/v1/models/registry", json=entry, timeout=600).raise_for_status()


def body(model: str, prompt: str, tokens: int, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": stream,
    }
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def stream_once(client: httpx.Client, url: str, payload: dict[str, Any]) -> dict[str, float]:
    """One streamed request: time to first token, wall time, completion tokens."""
    start = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", url + "/v1/chat/completions", json=payload) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            choices = chunk.get("choices") or []
            if first is None and choices and choices[0]["delta"].get("content"):
                first = time.perf_counter() - start
    wall = time.perf_counter() - start
    return {"ttft": first or wall, "wall": wall, "tokens": tokens}


def reference_once(llm: Any, prompt: str, tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    first = None
    n = 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
    ):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            n += 1
            if first is None:
                first = time.perf_counter() - start
    wall = time.perf_counter() - start
    return {"ttft": first or wall, "wall": wall, "tokens": n}


def raw_batch(model: Any, n_seq: int, tokens: int, threads: int) -> dict[str, float]:
    """``n_seq`` sequences in one context, as a server at its best would decode them."""
    import llama_cpp
    import numpy as np

    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = 2048 * n_seq, 512, 512, n_seq
    cp.n_threads = cp.n_threads_batch = threads
    cp.kv_unified = False  # as the server: each sequence attends only to its own cells
    cp.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as Llama's default
    ctx = llama_cpp.llama_init_from_model(model.model, cp)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    n_vocab = model.n_vocab()
    try:
        prompts = [
            model.tokenize(
                f"<|im_start|>user\n{PROMPTS[i % len(PROMPTS)]}<|im_end|>\n<|im_start|>assistant\n"
                .encode(), True, True,
            )
            for i in range(n_seq)
        ]  # fmt: skip
        start = time.perf_counter()
        n, outs = 0, []
        for seq, prompt in enumerate(prompts):
            for pos, token in enumerate(prompt):
                batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
                batch.seq_id[n][0], batch.logits[n] = seq, pos == len(prompt) - 1
                n += 1
            outs.append(n - 1)
        batch.n_tokens = n
        positions = [len(p) for p in prompts]
        for _ in range(tokens):
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            for seq, out in enumerate(outs):
                logits = np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits_ith(ctx, out), shape=(n_vocab,)
                )
                batch.token[seq], batch.pos[seq] = int(logits.argmax()), positions[seq]
                batch.n_seq_id[seq], batch.seq_id[seq][0], batch.logits[seq] = 1, seq, True
                positions[seq] += 1
            batch.n_tokens, outs = n_seq, list(range(n_seq))
        wall = time.perf_counter() - start
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    return {"tokens_per_s": n_seq * tokens / wall}


def single(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "tokens_per_s": sum(r["tokens"] for r in runs) / sum(r["wall"] for r in runs),
        "ttft_s": statistics.median(r["ttft"] for r in runs),
    }


def clients(url: str, model: str, n: int, per_client: int, tokens: int) -> dict[str, float]:
    """``n`` closed-loop clients, ``per_client`` requests each: aggregate tokens/s and p50."""

    def client(i: int) -> list[tuple[float, int]]:
        out = []
        with httpx.Client(timeout=600) as c:
            for k in range(per_client):
                prompt = PROMPTS[(i + k) % len(PROMPTS)]
                start = time.perf_counter()
                r = c.post(url + "/v1/chat/completions", json=body(model, prompt, tokens, False))
                r.raise_for_status()
                out.append((time.perf_counter() - start, r.json()["usage"]["completion_tokens"]))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        done = [x for xs in pool.map(client, range(n)) for x in xs]
    wall = time.perf_counter() - start
    return {
        "tokens_per_s": sum(t for _, t in done) / wall,
        "p50_latency_s": statistics.median(s for s, _ in done),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--no-transformers", action="store_true")
    args = ap.parse_args()

    import llama_cpp

    from open_autoglm.ml.text.loading import bundled_smollm2_gguf

    gguf = str(bundled_smollm2_gguf())
    start = time.perf_counter()
    llm = llama_cpp.Llama(gguf, n_ctx=2048, n_threads=args.threads, verbose=False)
    ref_load = time.perf_counter() - start
    rows: dict[str, dict[str, Any]] = {}
    with server(args.threads) as url, httpx.Client(timeout=600) as http:
        register(url, "smol", {"n_ctx": 2048, "parallel": max(8, args.clients)})
        warm_payload = body("smol", PROMPTS[0], args.tokens, False)
        start = time.perf_counter()
        http.post(url + "/v1/chat/completions", json=warm_payload).raise_for_status()
        cold = time.perf_counter() - start
        warm = []
        for _ in range(3):
            start = time.perf_counter()
            http.post(url + "/v1/chat/completions", json=warm_payload).raise_for_status()
            warm.append(time.perf_counter() - start)
        rows["first request"] = {
            "cold_s": cold,
            "warm_s": statistics.median(warm),
            "extra_s": cold - statistics.median(warm),
        }
        ref_rounds, ours_rounds, many_rounds, raw_rounds = [], [], [], []
        for _ in range(args.rounds):
            ref_rounds.append(single([reference_once(llm, p, args.tokens) for p in PROMPTS]))
            raw_rounds.append(raw_batch(llm._model, args.clients, args.tokens, args.threads))
            ours_rounds.append(
                single(
                    [stream_once(http, url, body("smol", p, args.tokens, True)) for p in PROMPTS]
                )
            )
            many_rounds.append(clients(url, "smol", args.clients, 2, args.tokens))
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        ref_tps, ref_ttft = med(ref_rounds, "tokens_per_s"), med(ref_rounds, "ttft_s")
        rows["llama.cpp"] = {"tokens_per_s": ref_tps, "ttft_s": ref_ttft, "load_s": ref_load}
        rows[f"llama.cpp {args.clients} seqs raw"] = {
            "tokens_per_s": med(raw_rounds, "tokens_per_s")
        }
        rows["one stream"] = {
            "tokens_per_s": med(ours_rounds, "tokens_per_s"),
            "ttft_s": med(ours_rounds, "ttft_s"),
        }
        rows[f"{args.clients} clients"] = {
            "tokens_per_s": med(many_rounds, "tokens_per_s"),
            "p50_latency_s": med(many_rounds, "p50_latency_s"),
        }
        if not args.no_transformers:
            register(url, "smol-torch", {"runtime": "torch"})
            http.post(
                url + "/v1/chat/completions", json=body("smol-torch", PROMPTS[0], 4, False)
            ).raise_for_status()  # converts (once, cached) and loads
            rows["transformers one stream"] = single(  # two prompts: it is the slow one
                [
                    stream_once(http, url, body("smol-torch", p, args.tokens, True))
                    for p in PROMPTS[:2]
                ]
            )
            rows[f"transformers {args.clients} clients"] = clients(
                url, "smol-torch", args.clients, 1, args.tokens
            )
    for row in rows.values():
        if "tokens_per_s" in row:
            row["x_llama_tps"] = row["tokens_per_s"] / ref_tps
        if "ttft_s" in row:
            row["x_llama_ttft"] = row["ttft_s"] / ref_ttft
    print(f"{'target':<28}{'tok/s':>9}{'x llama':>9}{'TTFT s':>9}{'x llama':>9}{'p50 s':>8}")
    for name, row in rows.items():
        if "cold_s" in row:
            print(
                f"{name:<28} cold {row['cold_s']:.2f}s warm {row['warm_s']:.2f}s "
                f"extra {row['extra_s']:+.2f}s"
            )
            continue
        cells = [
            f"{row.get('tokens_per_s', 0):9.1f}",
            f"{row.get('x_llama_tps', 0):9.2f}",
            f"{row['ttft_s']:9.3f}" if "ttft_s" in row else " " * 9,
            f"{row['x_llama_ttft']:9.2f}" if "x_llama_ttft" in row else " " * 9,
            f"{row['p50_latency_s']:8.2f}" if "p50_latency_s" in row else "",
        ]
        print(f"{name:<28}" + "".join(cells))
    out = {
        "threads": args.threads,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "clients": args.clients,
        "llama_cpp_python": llama_cpp.__version__,
        "rows": rows,
    }
    (RESULTS / "generation.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
