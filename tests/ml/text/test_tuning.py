"""Load-time measurements of an embedding model: its Linears' form and its pack cap."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers.texts import MIXED_TEXTS
from open_autoglm.errors import ValidationError
from open_autoglm.ml.text import tuning
from open_autoglm.ml.text.embedding import Embedder
from open_autoglm.ml.text.linear import PackedLinear, form_available
from open_autoglm.ml.text.loading import load_model

TEXTS = MIXED_TEXTS


class _CostedEmbedder(Embedder):
    """An Embedder whose pack forward costs a set time per token for each pack size."""

    us_per_token: dict[int, float] = {}

    def _packed_hidden_states(self, inputs: dict[str, Any]) -> Any:
        tokens = int(inputs["input_ids"].numel())
        size = min(self.us_per_token, key=lambda s: abs(s - tokens))
        end = time.perf_counter() + self.us_per_token[size] * tokens * 1e-6
        while time.perf_counter() < end:
            pass
        return None


def test_the_pack_cap_is_the_largest_pack_no_dearer_per_token(tiny_embedder_dir: Path) -> None:
    loaded = load_model(tiny_embedder_dir, "embedding", linear="torch")
    embedder = _CostedEmbedder(loaded, max_length=32)
    # 256 and 512 cost the same per token (bigger packs: fewer of them per call); 1024
    # spills out of cache; 128 pays its fixed part over too few tokens.
    embedder.us_per_token = {128: 6.0, 256: 2.0, 512: 2.0, 1024: 4.0}
    assert tuning.tune_pack_tokens(embedder) == 512
    assert embedder.pack_tokens == 512 and set(embedder.pack_timings) == {128, 256, 512, 1024}
    embedder.us_per_token = {128: 6.0, 256: 2.0, 512: 3.0, 1024: 4.0}  # the EPYC's shape
    assert tuning.tune_pack_tokens(embedder) == 256
    # The real forward on the tiny model: one of the candidates, and vectors unchanged.
    real = Embedder.from_path(tiny_embedder_dir)
    assert real.pack_tokens in tuning.PACK_CANDIDATES
    fixed = Embedder.from_path(tiny_embedder_dir, pack_tokens=24)
    assert fixed.pack_tokens == 24
    torch.testing.assert_close(real.embed(TEXTS * 4), fixed.embed(TEXTS * 4), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValidationError, match="pack_tokens"):
        Embedder(loaded, pack_tokens=0)


def test_synthetic_packs_vary_in_shape_within_their_size(tiny_embedder_dir: Path) -> None:
    embedder = Embedder(load_model(tiny_embedder_dir, "embedding", linear="torch"))
    packs = tuning.synthetic_packs(embedder, (64, 384), variants=3)
    for size, (group, tokens) in packs.items():
        counts = [int(p["input_ids"].numel()) for p in group]
        assert len(set(counts)) == 3  # three shapes, as real calls change shape
        assert all(size // 2 <= c <= size + embedder.max_length for c in counts)
        assert tokens == sum(counts)


def test_the_fastest_form_of_linears_is_kept(
    tiny_embedder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for form in ("onednn", "mkl"):
        if not form_available(form)[0]:
            pytest.fail(f"this torch build has no usable {form} linear op; the test needs it")
    texts = TEXTS * 3
    want = Embedder.from_path(tiny_embedder_dir, linear="torch", pack=False).embed(texts)

    def timed(onednn: float, mkl: float, torch_: float = 1.0e-6) -> Embedder:
        per_token = {"onednn": onednn, "mkl": mkl, "torch": torch_}
        monkeypatch.setattr(
            tuning,
            "time_packs",
            lambda _e, packs, ways=None, rounds=3: {
                (w, size): per_token[w] for w in (ways or {}) for size in packs
            },
        )
        embedder = Embedder(load_model(tiny_embedder_dir, "embedding", linear="onednn"))
        assert embedder.linear == "onednn"
        tuning.tune_linear(embedder)
        return embedder

    # MKL's packed form is the one to beat: a tie keeps it, the others must win by the margin.
    tie = timed(onednn=0.99e-6, mkl=1.0e-6, torch_=0.99e-6)
    assert tie.linear == "mkl" and set(tie.linear_timings) == {"onednn", "mkl", "torch"}
    torch_ = timed(onednn=1.0e-6, mkl=1.0e-6, torch_=0.9e-6)
    assert torch_.linear == "torch"
    assert not any(isinstance(m, PackedLinear) for m in torch_.model.modules())
    onednn = timed(onednn=0.9e-6, mkl=0.95e-6)
    assert onednn.linear == "onednn"
    assert onednn.linear_timings["onednn"] < onednn.linear_timings["mkl"]
    for embedder in (tie, torch_, onednn):  # every form computes the same vectors
        torch.testing.assert_close(embedder.embed(texts), want, atol=1e-5, rtol=1e-4)
    monkeypatch.undo()
    # The real measurement on the tiny model picks one of the three and keeps it.
    real = Embedder.from_path(tiny_embedder_dir)
    assert real.linear in ("onednn", "mkl", "torch")
    assert set(real.linear_timings) == {"onednn", "mkl", "torch"}
    torch.testing.assert_close(real.embed(texts), want, atol=1e-5, rtol=1e-4)
    # A model that does not run packed keeps what it has, unmeasured.
    padded = Embedder(load_model(tiny_embedder_dir, "embedding", linear="onednn"), pack=False)
    assert tuning.tune_linear(padded) == "onednn" == padded.linear
