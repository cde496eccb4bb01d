"""The llama.cpp backend on the bundled SmolLM2 GGUF: prompt cache, cancellation, structured
outputs (50 schemas), and the GGUF routing of the loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import jsonschema
import pytest

from helpers.schemas import json_schemas
from open_autoglm.errors import TaskCancelledError, ValidationError
from open_autoglm.ml.text.decode_batch import GenerationRequest
from open_autoglm.ml.text.llama_cpp.gguf_header import GGUFHeaderError, gguf_metadata
from open_autoglm.ml.text.llama_cpp.model import (
    LlamaCppModel,
    LlamaCppOptions,
    estimate_gguf_bytes,
)
from open_autoglm.ml.text.llama_cpp.slots import SlotTable
from open_autoglm.ml.text.loading import bundled_smollm2_gguf
from open_autoglm.ml.text.model_loader import TextModelLoader
from open_autoglm.ml.text.sampling import SamplingParams
from open_autoglm.ml.text.structured import (
    grammar_for_response_format,
    unsupported_schema_features,
)

OPTIONS = LlamaCppOptions(n_threads=1, n_ctx=1024, parallel=8)


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LlamaCppModel]:
    model = LlamaCppModel(bundled_smollm2_gguf(), OPTIONS)
    yield model
    model.close()


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0)


# -- slots (pure) ----------------------------------------------------------------------------


def test_slot_table_prefers_the_longest_cached_prefix_then_the_lowest_id() -> None:
    slots = SlotTable(3)
    a = slots.acquire([1, 2, 3, 4])
    assert (a.seq_id, a.keep) == (0, 0)
    slots.fed(a.seq_id, [1, 2, 3, 4, 9])
    slots.release(a.seq_id)
    again = slots.acquire([1, 2, 3, 4])  # the same prompt: all but its last two tokens reused
    assert (again.seq_id, again.keep) == (0, 2)
    b = slots.acquire([7, 7])  # the lowest free id, so busy ids stay consecutive
    assert (b.seq_id, b.keep) == (1, 0)
    assert slots.free == 1
    slots.release(b.seq_id)
    slots.release(again.seq_id)
    assert slots.idle() == [0]  # b fed nothing, it caches nothing
    c = slots.acquire([5])  # no shared prefix anywhere: the lowest id, its cache dropped
    assert (c.seq_id, c.keep, slots.cached(0)) == (0, 0, 0)


# -- backend ---------------------------------------------------------------------------------


def test_gguf_is_served_by_llama_cpp_with_weights_and_kv_cache_counted(
    smollm2: LlamaCppModel,
) -> None:
    loader = TextModelLoader(threads=1)
    entry = {"name": "s", "source": "bundled:smollm2", "task_types": ["text-generation"]}
    assert loader.gguf_source(entry) == bundled_smollm2_gguf()
    torch_entry = {**entry, "options": {"runtime": "torch"}}
    assert loader.gguf_source(torch_entry) is None  # dequantised for transformers instead
    size = bundled_smollm2_gguf().stat().st_size
    # SmolLM2: 30 layers x 3 KV heads x 64 dims, keys and values in f16, 8 x 1024 cells.
    kv = 2 * 30 * 3 * 64 * 2 * 8 * 1024
    assert smollm2.memory_bytes == pytest.approx(size + kv, rel=0.05)
    assert estimate_gguf_bytes(bundled_smollm2_gguf(), OPTIONS) == size + kv


def test_the_gguf_header_reader_agrees_with_llama_cpp(smollm2: LlamaCppModel) -> None:
    ours = gguf_metadata(bundled_smollm2_gguf())
    theirs = smollm2._model.metadata()  # llama.cpp's own reading, every value as a string
    compared = 0
    for key, value in ours.items():
        if isinstance(value, int | str) and not isinstance(value, bool):
            assert str(value) == theirs[key], key
            compared += 1
    assert compared >= 20 and ours["llama.block_count"] == 30
    assert not any(key.startswith("tokenizer.ggml.tokens") for key in ours)  # arrays skipped


def test_a_truncated_gguf_is_refused_and_sized_by_its_file(tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(bundled_smollm2_gguf().read_bytes()[:4096])  # ends inside the vocabulary
    not_gguf = tmp_path / "not.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + bytes(64))
    for path in (cut, not_gguf):
        with pytest.raises(GGUFHeaderError):
            gguf_metadata(path)
        assert estimate_gguf_bytes(path, OPTIONS) == path.stat().st_size


_COLD_LOAD = """
import sys
from pathlib import Path
from open_autoglm.executors.model_service import ModelService
from open_autoglm.storage.hub import StorageHub

root = Path(sys.argv[1])
storage = StorageHub(f"sqlite:///{root / 'db.sqlite'}", root).open()
service = ModelService(storage, cache_dir=root / "models", budget_bytes=2**31, inprocess_threads=1,
                       generation_threads=1)
service.register(name="s", source="bundled:smollm2", task_types=["text-generation"],
                 options={"n_ctx": 64, "parallel": 1})
with service.lease("s") as model:
    print(type(model).__name__, "torch" in sys.modules, "transformers" in sys.modules)
service.close()
storage.close()
"""


def test_loading_a_gguf_model_imports_no_torch(tmp_path: Path) -> None:
    # torch takes ~2 s to import: a first request to a llama.cpp model must not pay it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGLM_")}
    out = subprocess.run(
        [sys.executable, "-c", _COLD_LOAD, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert out.stdout.split() == ["LlamaCppModel", "False", "False"]


def test_prompt_cache_reuses_a_shared_prefix_with_the_same_output(smollm2: LlamaCppModel) -> None:
    system = {"role": "system", "content": "You answer in one short sentence. " * 8}
    first = GenerationRequest(
        messages=[system, {"role": "user", "content": "Name a colour."}], params=greedy(8)
    )
    second = GenerationRequest(
        messages=[system, {"role": "user", "content": "Name a fruit."}], params=greedy(8)
    )

    def run(batch: object, request: GenerationRequest) -> str:
        batch.add([request])  # type: ignore[attr-defined]
        while batch.active:  # type: ignore[attr-defined]
            batch.step()  # type: ignore[attr-defined]
        ((_, result),) = batch.pop_finished()  # type: ignore[attr-defined]
        return str(result.text)

    warm = smollm2.new_batch()
    run(warm, first)
    reused_before = warm.prompt_tokens_reused
    warm_text = run(warm, second)
    reused = warm.prompt_tokens_reused - reused_before
    assert reused >= len(smollm2.tokenize(system["content"], add_bos=False, special=False))
    assert warm_text == run(smollm2.new_batch(), second)  # a cold context says the same


def test_a_cancelled_sequence_is_freed_within_one_decode_step(smollm2: LlamaCppModel) -> None:
    engine = smollm2.engine()
    deltas: list[str] = []
    at_cancel: list[int] = []
    future: Future[object] | None = None

    def on_delta(delta: str) -> None:
        deltas.append(delta)
        if len(deltas) == 3 and future is not None:
            at_cancel.append(engine.steps)
            engine.cancel(future)  # type: ignore[arg-type]

    request = GenerationRequest(
        prompt="Tell me a long story.", params=greedy(400), on_delta=on_delta
    )
    future = engine.submit(request)
    freed_at: list[tuple[int, int]] = []
    future.add_done_callback(lambda _: freed_at.append((engine.steps, engine.active)))
    with pytest.raises(TaskCancelledError):
        future.result(timeout=120)
    (steps, active) = freed_at[0]
    assert active == 0 and steps <= at_cancel[0] + 1


# -- structured outputs ----------------------------------------------------------------------


def test_fifty_json_schemas_each_give_valid_output(smollm2: LlamaCppModel) -> None:
    schemas = json_schemas(50, seed=7)
    engine = smollm2.engine()
    futures = []
    for schema in schemas:
        grammar = grammar_for_response_format(
            {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}, loc=["rf"]
        )
        futures.append(
            engine.submit(
                GenerationRequest(
                    messages=[{"role": "user", "content": "Describe a pet as JSON."}],
                    params=greedy(320),
                    grammar=grammar,
                )
            )
        )
    for schema, future in zip(schemas, futures, strict=True):
        result = future.result(timeout=600)
        assert result.finish_reason == "stop", (schema, result.text)
        jsonschema.validate(json.loads(result.text), schema)


def test_json_object_gives_an_object(smollm2: LlamaCppModel) -> None:
    grammar = grammar_for_response_format({"type": "json_object"}, loc=["rf"])
    ask = [{"role": "user", "content": "Give a JSON object with a name and an age."}]
    result = smollm2.generate(
        [GenerationRequest(messages=ask, params=greedy(64), grammar=grammar)]
    )[0]
    assert isinstance(json.loads(result.text), dict)


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"type": "integer", "minimum": 3}, "minimum"),
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "properties.a.not"),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "string", "format": "email"}, "format"),
        ({"$ref": "https://example.com/s.json"}, "$ref"),
    ],
)
def test_an_unsupported_schema_feature_is_refused_by_name(schema: dict, where: str) -> None:
    assert unsupported_schema_features(schema)[0][0] == where
    with pytest.raises(ValidationError) as info:
        grammar_for_response_format(
            {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            loc=["response_format"],
        )
    assert where in info.value.message
    loc = info.value.details[0]["loc"]
    assert loc[:3] == ["response_format", "json_schema", "schema"]
