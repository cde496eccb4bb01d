"""Prometheus metrics of the model cache, workers and upstreams, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from open_autoglm.executors.model_service import ModelService

__all__ = ["ModelCacheCollector"]


class ModelCacheCollector:
    """Prometheus collector over :meth:`ModelService.stats` (read at scrape time)."""

    def __init__(self, service: ModelService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.service.stats()
        for key, doc in (
            ("hits", "Model cache leases served by an already loaded model"),
            ("misses", "Model cache leases that had to load the model"),
            ("loads", "Models loaded"),
            ("load_failures", "Model loads that failed"),
            ("evictions", "Models evicted to stay within the memory budget"),
        ):
            yield CounterMetricFamily(f"autoglm_model_cache_{key}", doc, value=s[key])
        yield GaugeMetricFamily(
            "autoglm_model_cache_used_bytes", "Bytes of loaded models", value=s["used_bytes"]
        )
        yield GaugeMetricFamily(
            "autoglm_model_cache_budget_bytes", "Model cache budget", value=s["budget_bytes"]
        )
        loaded = GaugeMetricFamily(
            "autoglm_model_loaded_bytes", "Bytes of each loaded model", labels=["model"]
        )
        for name, info in s["models"].items():
            loaded.add_metric([name], info["bytes"])
        yield loaded
        circuit = GaugeMetricFamily(
            "autoglm_upstream_circuit_open",
            "1 when the upstream model's circuit breaker is open",
            labels=["model"],
        )
        in_flight = GaugeMetricFamily(
            "autoglm_upstream_in_flight",
            "Calls in flight to the upstream model (at most its bulkhead's limit)",
            labels=["model"],
        )
        waiting = GaugeMetricFamily(
            "autoglm_upstream_waiting",
            "Calls waiting for a slot of the upstream model's bulkhead",
            labels=["model"],
        )
        refused = CounterMetricFamily(
            "autoglm_upstream_bulkhead_rejected",
            "Calls refused by the upstream model's bulkhead (429 bulkhead_full)",
            labels=["model"],
        )
        for name, info in s["upstreams"].items():
            circuit.add_metric([name], 1.0 if info["open"] else 0.0)
            in_flight.add_metric([name], info["bulkhead"]["in_flight"])
            waiting.add_metric([name], info["bulkhead"]["waiting"])
            refused.add_metric([name], info["bulkhead"]["rejected"])
        yield circuit
        yield in_flight
        yield waiting
        yield refused

    def describe(self) -> Iterator[Any]:
        return iter(())
