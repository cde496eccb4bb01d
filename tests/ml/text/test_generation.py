from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.generation import (
    GenerationRequest,
    Generator,
    SamplingParams,
)
from open_autoglm.ml.text.tiny import TINY_CORPUS


@pytest.fixture(scope="module")
def generator(tiny_gpt2_dir: Path) -> Generator:
    gen = Generator.from_path(tiny_gpt2_dir, max_batch_size=8)
    yield gen
    gen.close()


def _mixed_requests(n: int, seed: int = 0) -> list[GenerationRequest]:
    rnd = random.Random(seed)
    requests = []
    for i in range(n):
        words = rnd.choice(TINY_CORPUS).split()[: rnd.randint(1, 9)]
        params = SamplingParams(max_tokens=rnd.randint(1, 16), stop=("e",) if i % 5 == 0 else ())
        requests.append(GenerationRequest(prompt=" ".join(words), params=params, chat=False))
    return requests


def test_batched_greedy_equals_single_greedy(generator: Generator) -> None:
    requests = _mixed_requests(32)
    alone = [generator.generate([r])[0] for r in requests]
    together = generator.generate(requests)  # 8 slots: rows join as others finish
    assert together == alone
    assert {r.finish_reason for r in alone} == {"stop", "length"}
    for r in alone:
        full = generator.tokenizer.decode(r.token_ids, skip_special_tokens=True)
        assert full.startswith(r.text)  # equal unless a stop string cut it
    assert len({r.prompt_tokens for r in alone}) > 3  # the lengths really differ


def test_engine_joins_requests_between_steps(generator: Generator) -> None:
    requests = _mixed_requests(32, seed=1)
    alone = [generator.generate([r])[0] for r in requests]
    engine = generator.engine()
    futures = []
    for i, request in enumerate(requests):
        futures.append(engine.submit(request))
        if i % 4 == 3:
            time.sleep(0.01)  # let decoding start so later requests join a running batch
    assert [f.result(timeout=60) for f in futures] == alone
    assert engine.max_active > 1


def test_seeded_sampling_does_not_depend_on_batch_mates(generator: Generator) -> None:
    mine = GenerationRequest(
        prompt="the cat", params=SamplingParams(max_tokens=12, temperature=1.0, seed=3), chat=False
    )
    other = GenerationRequest(
        prompt="one two three four five",
        params=SamplingParams(max_tokens=5, temperature=0.8, top_p=0.9, seed=9),
        chat=False,
    )
    alone = generator.generate([mine])[0]
    assert generator.generate([other, mine, other])[1] == alone
    different_seed = GenerationRequest(
        prompt="the cat", params=SamplingParams(max_tokens=12, temperature=1.0, seed=4), chat=False
    )
    assert generator.generate([different_seed])[0].token_ids != alone.token_ids


def test_stop_string_truncates_and_usage_counts(generator: Generator) -> None:
    base = generator.generate(
        [GenerationRequest(prompt="hello world", chat=False, params=SamplingParams(max_tokens=12))]
    )[0]
    assert base.finish_reason == "length" and base.completion_tokens == 12
    assert base.prompt_tokens == len(generator.tokenizer("hello world")["input_ids"])
    stop = base.text[4:6]
    cut = generator.generate(
        [
            GenerationRequest(
                prompt="hello world", chat=False, params=SamplingParams(max_tokens=12, stop=(stop,))
            )
        ]
    )[0]
    assert cut.finish_reason == "stop"
    assert cut.text == base.text[: base.text.find(stop)]
    assert cut.completion_tokens < 12


def test_stream_deltas_add_up_to_the_result(generator: Generator) -> None:
    params = SamplingParams(max_tokens=15, stop=("an",))
    request = GenerationRequest(prompt="one two", params=params, chat=False)
    deltas = list(generator.stream(request))
    assert "".join(deltas) == generator.generate([request])[0].text
    seen: list[str] = []
    cb = GenerationRequest(prompt="one two", params=params, chat=False, on_delta=seen.append)
    assert "".join(seen) == "" and generator.generate([cb])[0].text == "".join(seen)


def test_chat_template_is_applied_when_present(generator: Generator) -> None:
    plain = generator.generate([GenerationRequest(prompt="hi", chat=False)])[0]
    chat = generator.generate([GenerationRequest(prompt="hi")])[0]
    messages = generator.generate(
        [GenerationRequest(messages=[{"role": "user", "content": "hi"}])]
    )[0]
    assert chat.prompt_tokens > plain.prompt_tokens
    assert messages == chat


def test_prompt_longer_than_context_is_rejected(generator: Generator) -> None:
    long_prompt = "hello world " * 200
    with pytest.raises(ValidationError):
        generator.generate([GenerationRequest(prompt=long_prompt, chat=False)])
    engine = generator.engine()
    bad = engine.submit(GenerationRequest(prompt=long_prompt, chat=False))
    good = engine.submit(GenerationRequest(prompt="hi", chat=False))
    assert isinstance(bad.exception(timeout=30), ValidationError)
    assert good.result(timeout=30).completion_tokens >= 1


def test_smollm2_batched_equals_single(smollm2_dir: Path) -> None:
    gen = Generator.from_path(smollm2_dir)
    prompts = ["What is 2+2?", "Name a colour.", "Say hello to Paris in one short sentence please."]
    requests = [GenerationRequest(prompt=p, params=SamplingParams(max_tokens=6)) for p in prompts]
    alone = [gen.generate([r])[0] for r in requests]
    assert gen.generate(requests) == alone
    assert all(r.text.strip() for r in alone)
    # Incremental detokenisation ends where a full decode of the tokens does.
    assert [r.text for r in alone] == [
        gen.tokenizer.decode(r.token_ids, skip_special_tokens=True) for r in alone
    ]
    assert alone[0].prompt_tokens > 10  # the chat template (system prompt) was applied


def test_engine_streams_deltas_sync_and_async(generator: Generator) -> None:
    import asyncio

    request = GenerationRequest(prompt="one two", params=SamplingParams(max_tokens=10), chat=False)
    expected = generator.generate([request])[0].text
    engine = generator.engine()
    assert "".join(engine.stream(request)) == expected

    async def collect() -> list[str]:
        return [d async for d in engine.astream(request)]

    deltas = asyncio.run(collect())
    assert "".join(deltas) == expected and len(deltas) > 1


def test_cancel_stops_a_running_and_a_waiting_request(tiny_gpt2_dir: Path) -> None:
    from open_autoglm.errors import TaskCancelledError
    from open_autoglm.ml.text.engine import GenerationEngine

    gen = Generator.from_path(tiny_gpt2_dir, max_batch_size=1)
    engine = GenerationEngine(gen)
    long = SamplingParams(max_tokens=200)
    running = engine.submit(GenerationRequest(prompt="one", params=long, chat=False))
    waiting = engine.submit(GenerationRequest(prompt="two", params=long, chat=False))
    while engine.steps < 2:
        time.sleep(0.001)
    engine.cancel(waiting)  # still queued behind the single slot
    engine.cancel(running)
    for future in (running, waiting):
        assert isinstance(future.exception(timeout=30), TaskCancelledError)
    after = engine.submit(
        GenerationRequest(prompt="hi", params=SamplingParams(max_tokens=3), chat=False)
    )
    assert after.result(timeout=30).completion_tokens == 3
    assert engine.steps < 150  # the 200-token request did not run to the end
    engine.close()
