from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from open_autoglm.errors import UnavailableError, ValidationError
from open_autoglm.executors.model_cache import ModelCache, ModelState


@dataclass
class FakeModel:
    name: str
    memory_bytes: int
    closed: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.closed.append(self.name)


class FakeLoader:
    def __init__(self, sizes: dict[str, int], delay: float = 0.0) -> None:
        self.sizes = sizes
        self.delay = delay
        self.calls: list[str] = []
        self.closed: list[str] = []

    def __call__(self, name: str) -> FakeModel:
        self.calls.append(name)
        if self.delay:
            time.sleep(self.delay)
        if name not in self.sizes:
            raise KeyError(name)
        return FakeModel(name, self.sizes[name], self.closed)


def test_hit_miss_and_lru_eviction() -> None:
    loader = FakeLoader({"a": 40, "b": 40, "c": 40})
    cache = ModelCache(loader, budget_bytes=100)
    with cache.lease("a") as a:
        assert a.name == "a"
    with cache.lease("b"):
        pass
    with cache.lease("a"):  # a is now more recent than b
        pass
    with cache.lease("c"):
        pass
    assert sorted(cache.loaded()) == ["a", "c"]
    assert loader.closed == ["b"]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["evictions"], stats["loads"]) == (1, 3, 1, 3)
    assert stats["used_bytes"] == 80 and not stats["over_budget"]
    assert stats["models"]["a"]["state"] == "loaded"


def test_model_in_use_is_never_evicted() -> None:
    loader = FakeLoader({"a": 60, "b": 60})
    cache = ModelCache(loader, budget_bytes=100)
    with cache.lease("a"):
        with cache.lease("b"):
            assert sorted(cache.loaded()) == ["a", "b"]
            assert cache.stats()["over_budget"]
            assert not cache.evict("a")
        # b's lease ended but a is still pinned: b (the only idle one) goes.
        assert cache.loaded() == ["a"]
    assert cache.evict("a") and cache.loaded() == []


def test_single_model_over_budget_is_a_clear_error() -> None:
    loader = FakeLoader({"huge": 500})
    cache = ModelCache(loader, budget_bytes=100)
    with pytest.raises(UnavailableError, match="budget"):
        cache.acquire("huge")
    assert cache.state("huge") is None and loader.closed == ["huge"]
    assert cache.stats()["load_failures"] == 1


def test_loader_failure_is_not_cached() -> None:
    loader = FakeLoader({})
    cache = ModelCache(loader, budget_bytes=100)
    for _ in range(2):
        with pytest.raises(KeyError):
            cache.acquire("nope")
    assert loader.calls == ["nope", "nope"]
    with pytest.raises(ValidationError):
        cache.release("nope")


def test_concurrent_first_use_loads_once() -> None:
    loader = FakeLoader({"a": 10}, delay=0.05)
    cache = ModelCache(loader, budget_bytes=100)
    seen: list[FakeModel] = []
    lock = threading.Lock()

    def use() -> None:
        with cache.lease("a") as model:
            with lock:
                seen.append(model)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loader.calls == ["a"]
    assert len(seen) == 8 and all(m is seen[0] for m in seen)
    assert cache.stats()["models"]["a"]["leases"] == 0
    assert cache.stats()["hits"] == 7


def test_estimate_makes_room_before_loading() -> None:
    loader = FakeLoader({"a": 70, "b": 70})
    cache = ModelCache(loader, budget_bytes=100, estimate=lambda name: loader.sizes[name])
    with cache.lease("a"):
        pass
    # a is evicted before b's loader runs, so the two never sit in memory together.
    original = loader.__call__

    def check_then_load(name: str) -> FakeModel:
        assert cache.state("a") is None
        return original(name)

    cache._loader = check_then_load
    with cache.lease("b"):
        assert cache.state("b") is ModelState.LOADED


def test_load_time_uses_injected_clock() -> None:
    ticks = iter([10.0, 12.5])
    cache = ModelCache(FakeLoader({"a": 1}), budget_bytes=10, clock=lambda: next(ticks))
    with cache.lease("a"):
        pass
    assert cache.stats()["models"]["a"]["load_seconds"] == 2.5


def test_real_tiny_models_through_text_loader(tmp_path: Path) -> None:
    import torch

    from open_autoglm.ml.text.model_loader import TextModelLoader
    from open_autoglm.ml.text.tiny import build_tiny_bert_embedder, build_tiny_gpt2

    torch.set_num_threads(1)
    entries = {
        "emb": {
            "source": str(build_tiny_bert_embedder(tmp_path / "e")),
            "task_types": ["embedding"],
        },
        "gen": {"source": str(build_tiny_gpt2(tmp_path / "g")), "task_types": ["text-generation"]},
    }
    text_loader = TextModelLoader(cache_dir=tmp_path / "cache")
    sizes = [text_loader(entry).memory_bytes for entry in entries.values()]
    # Room for either model alone, not for both: the second load must evict the first.
    budget = max(sizes) + min(sizes) // 2
    cache = ModelCache(lambda name: text_loader(entries[name]), budget_bytes=budget)
    with cache.lease("emb") as emb:
        assert emb.embed(["hello"]).shape == (1, 64)
    with cache.lease("gen") as gen:
        assert gen.generate(["hello"])[0].completion_tokens >= 1
    stats = cache.stats()
    # The budget holds one of them, so the embedder was evicted.
    assert cache.loaded() == ["gen"] and stats["evictions"] == 1
    assert stats["used_bytes"] == gen.memory_bytes > 0
