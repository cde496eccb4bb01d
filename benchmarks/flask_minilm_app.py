"""The naive baseline server: Flask, one MiniLM forward per request (run under gunicorn).

    BENCH_TORCH_THREADS=1 gunicorn -w 2 -b 127.0.0.1:8000 'benchmarks.flask_minilm_app:create_app()'

Plain transformers on purpose (tokenize, forward, mean pool, normalise), the way such a
service is usually written; ``BENCH_TORCH_THREADS`` unset leaves torch's default thread count.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["create_app"]


def create_app() -> Any:
    import torch
    from flask import Flask, jsonify, request
    from transformers import AutoModel, AutoTokenizer

    from open_autoglm.ml.text.loading import bundled_minilm_dir

    threads = os.environ.get("BENCH_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    path = bundled_minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    app = Flask(__name__)

    @app.post("/predict")
    def predict() -> Any:
        text = request.get_json()["text"]
        batch = tokenizer([text], truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state  # (1, seq, 384)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        vector = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
        return jsonify({"embedding": vector[0].tolist()})

    return app
