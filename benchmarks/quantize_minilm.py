"""Dynamic int8 vs float32 MiniLM embeddings: QPS and cosine, measured in the same run.

    .venv/bin/python benchmarks/quantize_minilm.py [--seconds 6] [--threads 1] [--onnx]

Prints a table and writes ``benchmarks/results/quantize_minilm.json``. The bar for turning
int8 on by default would be >= 1.6x float32 QPS with cosine >= 0.99 on every sentence.
``--onnx`` adds ONNX Runtime variants (fp32, int8 on every Linear whole, and the default int8
with the outlier channels in fp32) and an accuracy table: each int8 variant's min and mean
cosine to torch fp32 over five sets of texts in calls of 8 and 32 (the benchmark sentences,
two other generated sets, and two sets of real product reviews from ``../shared/data``).
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
    """ONNX Runtime float32, int8 on every Linear, and int8 with the outliers in float32."""
    from open_autoglm.ml.text.onnx_embedding import OnnxEmbedder, export_encoder_onnx

    loaded = embedder.loaded
    paths = {
        "onnx-fp32": export_encoder_onnx(loaded, workdir, int8=False),
        "onnx-int8-whole": export_encoder_onnx(loaded, workdir, outliers_fp32=False),
        "onnx-int8": export_encoder_onnx(loaded, workdir),
    }
    return {name: OnnxEmbedder(loaded, path, threads=threads) for name, path in paths.items()}


def accuracy_sets() -> dict[str, list[str]]:
    """Texts for the accuracy table: generated sentences and real reviews (when present)."""
    sets = {
        "bench": mixed_sentences(512, seed=1),
        "gen13": mixed_sentences(1024, seed=13),
        "gen21": mixed_sentences(1024, seed=21),
    }
    reviews = (
        Path(__file__).resolve().parents[2]
        / "shared/data/multimodal/womens_clothing_reviews.parquet"
    )
    if reviews.exists():
        import pandas as pd

        texts = pd.read_parquet(reviews)["Review Text"].dropna().tolist()
        sets["reviews-a"], sets["reviews-b"] = texts[1000:1512], texts[5000:6024]
    return sets


def accuracy(base, variants: dict[str, object]) -> list[dict[str, object]]:
    """Min and mean cosine of each variant to ``base`` per text set and call size."""
    import torch

    def run(embedder, texts: list[str], call: int):
        return torch.cat(
            [
                torch.as_tensor(embedder.embed(texts[i : i + call]))
                for i in range(0, len(texts), call)
            ]
        )

    rows = []
    for set_name, texts in accuracy_sets().items():
        for call in (8, 32):
            want = run(base, texts, call)
            for name, embedder in variants.items():
                cos = torch.nn.functional.cosine_similarity(want, run(embedder, texts, call), dim=1)
                rows.append(
                    {"variant": name, "set": set_name, "texts": len(texts), "call": call,
                     "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}
                )  # fmt: skip
    return rows


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
    acc = []
    if args.onnx:
        onnx = {k: v for k, v in variants.items() if k.startswith("onnx-int8")}
        acc = accuracy(fp32, onnx)
        print(
            f"\n{'variant':>18} {'set':>10} {'texts':>5} {'call':>4} {'cos min':>8} {'cos mean':>8}"
        )
        for r in acc:
            print(
                f"{r['variant']:>18} {r['set']:>10} {r['texts']:>5} {r['call']:>4}"
                f" {r['cosine_min']:>8.4f} {r['cosine_mean']:>8.5f}"
            )
    out = Path(__file__).parent / "results" / "quantize_minilm.json"
    out.write_text(
        json.dumps(
            {"threads": args.threads, "seconds": args.seconds, "rows": rows, "accuracy": acc},
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
