"""Continuous batching vs one-at-a-time generation with SmolLM2-135M (converted from GGUF).

    .venv/bin/python benchmarks/generation_batching.py [--requests 32] [--threads 2]

32 requests with different prompt lengths and max_tokens, greedy. Baseline: each request
alone, back to back. Ours: all submitted concurrently to the ``GenerationEngine`` (a few at a
time, so later ones join a running batch). Checks the outputs are identical, and reports
completion tokens/s, wall time and the ratio. Both with the platform's default oneDNN
Linears and with torch's own (``options.linear: torch``), in the same run. Also times GGUF
conversion vs safetensors load. Writes ``benchmarks/results/generation_batching.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPICS = ["cats", "the ocean", "prime numbers", "Paris", "graph neural networks", "coffee"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from open_autoglm.ml.text.generation import GenerationRequest, Generator, SamplingParams
    from open_autoglm.ml.text.linear import swap_linears
    from open_autoglm.ml.text.loading import (
        ModelRole,
        bundled_smollm2_gguf,
        convert_gguf_to_safetensors,
        load_model,
    )

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="smollm2-"))
    try:
        start = time.perf_counter()
        convert_gguf_to_safetensors(bundled_smollm2_gguf(), tmp / "model")
        convert_s = time.perf_counter() - start
        loaded = load_model(tmp / "model", ModelRole.TEXT_GENERATION)  # torch's Linears
        fast = load_model(tmp / "model", ModelRole.TEXT_GENERATION, linear="auto")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"GGUF -> safetensors conversion {convert_s:.1f}s, safetensors load {loaded.load_seconds:.2f}s"
    )

    rnd = random.Random(0)
    requests = [
        GenerationRequest(
            prompt=f"Write {rnd.randint(1, 3)} sentences about {rnd.choice(TOPICS)}."
            + " Be concise." * rnd.randint(0, 4),
            params=SamplingParams(max_tokens=rnd.randint(8, 32)),
        )
        for _ in range(args.requests)
    ]
    assert swap_linears(fast.model) == 0  # already swapped by the loader
    rows: list[dict] = []
    outputs = {}
    for linear, model in (("onednn", fast), ("torch", loaded)):
        gen = Generator(model, max_batch_size=32)
        start = time.perf_counter()
        alone = [gen.generate([r])[0] for r in requests]
        alone_s = time.perf_counter() - start
        engine = gen.engine()
        start = time.perf_counter()
        futures = []
        for i, request in enumerate(requests):
            futures.append(engine.submit(request))
            if i % 8 == 7:
                time.sleep(0.05)  # staggered arrivals: later requests join a running batch
        batched = [f.result() for f in futures]
        batched_s = time.perf_counter() - start
        gen.close()
        outputs[linear] = alone
        tokens = sum(r.completion_tokens for r in alone)
        identical = sum(a == b for a, b in zip(alone, batched, strict=True))
        for mode, seconds in (("one at a time", alone_s), ("continuous batch", batched_s)):
            rows.append(
                {
                    "linear": linear,
                    "mode": mode,
                    "seconds": seconds,
                    "tokens": tokens,
                    "tokens_per_s": tokens / seconds,
                    "identical_to_alone": identical,
                    "decode_steps": engine.steps,
                    "largest_batch": engine.max_active,
                }
            )
    base = {r["mode"]: r["tokens_per_s"] for r in rows if r["linear"] == "torch"}
    alone_base = base["one at a time"]
    print(f"{'linear':<7} {'mode':<18} {'seconds':>8} {'tok/s':>8} {'x alone/torch':>13} "
          f"{'x same mode/torch':>17} {'identical':>9}")  # fmt: skip
    for r in rows:
        print(
            f"{r['linear']:<7} {r['mode']:<18} {r['seconds']:8.2f} {r['tokens_per_s']:8.1f} "
            f"{r['tokens_per_s'] / alone_base:13.2f} {r['tokens_per_s'] / base[r['mode']]:17.2f} "
            f"{r['identical_to_alone']:>6}/{len(requests)}"
        )
    same = sum(a == b for a, b in zip(outputs["onednn"], outputs["torch"], strict=True))
    print(f"oneDNN vs torch Linears, alone: {same}/{len(requests)} outputs the same "
          "(the two kernels sum in different orders)")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "generation_batching.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "requests": len(requests),
                "threads": args.threads,
                "onednn_equals_torch_alone": same,
                "convert_seconds": convert_s,
                "safetensors_load_seconds": loaded.load_seconds,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
