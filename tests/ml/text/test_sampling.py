from __future__ import annotations

import pytest
import torch

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.sampling import (
    SamplingParams,
    find_stop,
    make_generator,
    safe_text_end,
    sample_next_token,
)


def test_params_are_validated() -> None:
    for bad in (
        {"max_tokens": 0},
        {"max_tokens": 5000},
        {"temperature": -0.1},
        {"temperature": 2.5},
        {"top_p": 0.0},
        {"top_k": -1},
        {"stop": ("",)},
    ):
        with pytest.raises(ValidationError):
            SamplingParams(**bad)  # type: ignore[arg-type]


def test_greedy_picks_argmax() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample_next_token(logits, SamplingParams(), make_generator(0)) == 1


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(1))
    best = int(logits.argmax())
    for params in (
        SamplingParams(temperature=1.5, top_k=1),
        SamplingParams(temperature=1.5, top_p=1e-6),
    ):
        picks = {sample_next_token(logits, params, make_generator(s)) for s in range(20)}
        assert picks == {best}


def test_top_k_limits_choices_and_seed_repeats() -> None:
    logits = torch.arange(10, dtype=torch.float32)
    params = SamplingParams(temperature=2.0, top_k=3)
    picks = [sample_next_token(logits, params, make_generator(s)) for s in range(60)]
    assert set(picks) <= {7, 8, 9} and len(set(picks)) > 1
    gen_a, gen_b = make_generator(7), make_generator(7)
    a = [sample_next_token(logits, params, gen_a) for _ in range(10)]
    b = [sample_next_token(logits, params, gen_b) for _ in range(10)]
    assert a == b


def test_stop_search_and_streaming_holdback() -> None:
    assert find_stop("hello world", ["wor", "lo"]) == 3
    assert find_stop("hello", ["x"]) == -1
    # "wo" could be the start of "world": hold it back.
    assert safe_text_end("hello wo", ["world"]) == len("hello ")
    assert safe_text_end("hello", ["world"]) == 5
    assert safe_text_end("ab\ufffd", []) == 2
