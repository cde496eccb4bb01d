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


class OnnxEmbedder:
    """MiniLM through ONNX Runtime (float32 or int8), with the same tokenizer and pooling."""

    def __init__(self, embedder, onnx_path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self.inner = embedder

    def embed(self, texts: list[str]):
        import torch

        from open_autoglm.ml.text.embedding import pool

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty((len(texts), self.inner.dimension))
        for start in range(0, len(order), 32):
            chunk = order[start : start + 32]
            enc = self.inner.tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="np",
            )
            feeds = {
                k: enc[k].astype("int64") for k in ("input_ids", "attention_mask", "token_type_ids")
            }
            hidden = torch.from_numpy(self.session.run(None, feeds)[0])  # (chunk, seq, 384)
            vectors = pool(hidden, torch.from_numpy(enc["attention_mask"]), self.inner.pooling)
            out[torch.tensor(chunk)] = torch.nn.functional.normalize(vectors, dim=1)
        return out


def onnx_variants(embedder, threads: int, workdir: Path) -> dict[str, OnnxEmbedder]:
    """Export once, then float32, int8 (all MatMuls) and int8 without the FFN-out MatMuls."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Hidden(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = embedder.tokenizer(
        ["a short one", "and a longer sentence here"], padding=True, return_tensors="pt"
    )
    fp32 = workdir / "minilm.onnx"
    torch.onnx.export(
        Hidden(embedder.model).eval(),
        tuple(sample[n] for n in names),
        str(fp32),
        input_names=names,
        output_names=["hidden"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "hidden"]},
        opset_version=17,
        dynamo=False,
    )
    matmuls = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "MatMul"]
    ffn_out = [n for n in matmuls if "/output/dense/" in n and "attention" not in n]
    variants = {"onnx-fp32": fp32}
    for name, exclude in (("onnx-int8", []), ("onnx-int8-keepffn", ffn_out)):
        path = workdir / f"{name}.onnx"
        quantize_dynamic(
            str(fp32),
            str(path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=exclude,
        )
        variants[name] = path
    return {name: OnnxEmbedder(embedder, path, threads) for name, path in variants.items()}


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
        f"{'variant':>10} {'batch':>5} {'fp32 qps':>9} {'qps':>9} {'ratio':>6} {'cos min':>8} {'cos mean':>8}"
    )
    for r in rows:
        print(
            f"{r['variant']:>10} {r['batch']:>5} {r['fp32_qps']:>9.1f} {r['variant_qps']:>9.1f} {r['speedup']:>6.2f}"
            f" {r['cosine_min']:>8.4f} {r['cosine_mean']:>8.4f}"
        )
    out = Path(__file__).parent / "results" / "quantize_minilm.json"
    out.write_text(
        json.dumps({"threads": args.threads, "seconds": args.seconds, "rows": rows}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
