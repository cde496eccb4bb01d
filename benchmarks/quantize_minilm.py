"""Dynamic int8 vs float32 MiniLM embeddings: QPS and cosine, measured in the same run.

    .venv/bin/python benchmarks/quantize_minilm.py [--seconds 6] [--threads 1] [--onnx]

Prints a table and writes ``benchmarks/results/quantize_minilm.json``. The bar for turning
int8 on by default would be >= 1.6x float32 QPS with cosine >= 0.99 on every sentence.
``--onnx`` adds ONNX Runtime variants (fp32, int8, int8 keeping the FFN-out MatMuls in fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.sentences import mixed_sentences


def measure(embedder, texts: list[str], seconds: float, batch: int) -> tuple[float, object]:
    embedder.embed(texts[:batch])  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [texts[(done + i) % len(texts)] for i in range(batch)]
        embedder.embed(chunk)
        done += batch
    return done / (time.perf_counter() - start), embedder.embed(texts)


def onnx_variants(embedder, threads: int, workdir: Path) -> dict[str, object]:
    """ONNX Runtime float32, int8 on every MatMul, and int8 keeping FFN-out MatMuls in fp32."""
    from open_autoglm.ml.text.onnx_embedding import OnnxEmbedder, export_encoder_onnx

    loaded = embedder.loaded
    paths = {
        "onnx-fp32": export_encoder_onnx(loaded, workdir, int8=False),
        "onnx-int8": export_encoder_onnx(loaded, workdir, keep_ffn_fp32=False),
        "onnx-int8-keepffn": export_encoder_onnx(loaded, workdir),
    }
    return {name: OnnxEmbedder(loaded, path, threads=threads) for name, path in paths.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--onnx", action="store_true", help="also ONNX Runtime fp32/int8 (needs onnxruntime, onnx)"
    )
    args = ap.parse_args()

    import torch

    from open_autoglm.ml.text.embedding import Embedder
    from open_autoglm.ml.text.loading import ModelRole, bundled_minilm_dir, load_model
    from open_autoglm.ml.text.quantize import attention_only, quantize_loaded

    torch.set_num_threads(args.threads)
    texts = mixed_sentences(256, seed=1)
    loaded = load_model(bundled_minilm_dir(), ModelRole.EMBEDDING)
    fp32 = Embedder(loaded)
    variants = {
        "int8-all": Embedder(quantize_loaded(loaded)),
        "int8-attn": Embedder(quantize_loaded(loaded, include=attention_only)),
    }
    if args.onnx:
        import tempfile

        variants.update(
            onnx_variants(fp32, args.threads, Path(tempfile.mkdtemp(prefix="minilm-onnx-")))
        )
    rows = []
    for batch in (1, 32):
        base_qps, base_vecs = measure(fp32, texts, args.seconds, batch)
        for name, int8 in variants.items():
            q_qps, q_vecs = measure(int8, texts, args.seconds, batch)
            cos = torch.nn.functional.cosine_similarity(base_vecs, q_vecs, dim=1)
            rows.append(
                {
                    "variant": name,
                    "batch": batch,
                    "fp32_qps": base_qps,
                    "variant_qps": q_qps,
                    "speedup": q_qps / base_qps,
                    "cosine_min": float(cos.min()),
                    "cosine_mean": float(cos.mean()),
                }
            )
    print(
        f"{'variant':>18} {'batch':>5} {'fp32 qps':>9} {'qps':>9} {'ratio':>6} {'cos min':>8} {'cos mean':>8}"
    )
    for r in rows:
        print(
            f"{r['variant']:>18} {r['batch']:>5} {r['fp32_qps']:>9.1f} {r['variant_qps']:>9.1f} {r['speedup']:>6.2f}"
            f" {r['cosine_min']:>8.4f} {r['cosine_mean']:>8.4f}"
        )
    out = Path(__file__).parent / "results" / "quantize_minilm.json"
    out.write_text(
        json.dumps({"threads": args.threads, "seconds": args.seconds, "rows": rows}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
