"""Prometheus metrics of one Stitch app (prometheus-client, a registry per ingress replica).

Request-side metrics are measured in the ingress. Engine-side numbers (queue, batches,
adapter cache) come from the model replicas: every replica answer carries a snapshot of
its engine counters, and a collector exports the latest snapshot of each replica, labelled
with the replica's id.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
OTHER = "__other__"

# Engine counters exported from replica snapshots: name -> (snapshot key, help).
_COUNTERS = {
    "stitch_cache_hits": ("device_hits", "Adapter acquires served from a device slot"),
    "stitch_cache_misses": ("misses", "Adapter acquires that needed a slot fill"),
    "stitch_cache_host_hits": ("host_hits", "Slot fills served from the host tier"),
    "stitch_cache_loads": ("loads", "Adapter reads from a source"),
    "stitch_cache_load_failures": ("load_failures", "Adapter reads that failed"),
    "stitch_cache_load_seconds": ("load_seconds", "Seconds spent reading adapters"),
    "stitch_cache_bytes_loaded": ("bytes_loaded", "Bytes of adapters read"),
    "stitch_cache_device_evictions": ("device_evictions", "Adapters evicted from device slots"),
    "stitch_cache_host_evictions": ("host_evictions", "Adapters evicted from the host tier"),
    "stitch_engine_steps": ("steps", "Engine steps run"),
    "stitch_engine_rows": ("rows", "Rows (sequences) computed"),
}
_GAUGES = {
    "stitch_queue_depth": ("queued", "Rows waiting in the engine queue"),
    "stitch_cache_slots_used": ("slots_used", "Device slots holding an adapter"),
    "stitch_cache_host_bytes": ("host_bytes", "Bytes held by the host tier"),
}
_HISTOGRAMS = {
    "stitch_batch_size": ("batch_size", "Rows per engine step"),
    "stitch_batch_adapters": ("batch_adapters", "Distinct adapters per engine step"),
    "stitch_adapter_load_latency_seconds": ("load_latency", "Seconds per adapter load"),
}


class ReplicaCollector:
    """Exports the latest engine snapshot of every model replica."""

    def __init__(self) -> None:
        self.snapshots: dict[str, dict[str, Any]] = {}

    def update(self, replica: str, snapshot: dict[str, Any]) -> None:
        self.snapshots[replica] = snapshot

    def collect(self) -> Iterable:
        for name, (key, doc) in _COUNTERS.items():
            yield self._family(CounterMetricFamily(name, doc, labels=["replica"]), key)
        for name, (key, doc) in _GAUGES.items():
            yield self._family(GaugeMetricFamily(name, doc, labels=["replica"]), key)
        for name, (key, doc) in _HISTOGRAMS.items():
            family = HistogramMetricFamily(name, doc, labels=["replica"])
            for replica, snap in self.snapshots.items():
                if key in snap:
                    hist = snap[key]
                    family.add_metric([replica], _cumulative(hist["bounds"], hist["counts"]), hist["sum"])
            yield family

    def _family(self, family, key: str):
        for replica, snap in self.snapshots.items():
            if key in snap:
                family.add_metric([replica], float(snap[key]))
        return family


def _cumulative(bounds: list[float], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last is +Inf) -> Prometheus cumulative buckets."""
    total, out = 0, []
    for bound, count in zip([*map(str, bounds), "+Inf"], counts):
        total += count
        out.append((bound, float(total)))
    return out


class AdapterLabels:
    """Bounded label cardinality: the first ``limit`` adapters seen keep their name, others are '__other__'."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: OrderedDict[str, None] = OrderedDict()

    def __call__(self, adapter: str | None) -> str:
        if adapter is None:
            return "base"
        if adapter in self._known or len(self._known) < self.limit:
            self._known[adapter] = None
            return adapter
        return OTHER


class Metrics:
    """The app's metrics, in a registry of their own."""

    def __init__(self, adapter_label_limit: int = 100) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("stitch_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram("stitch_request_latency_seconds", "End-to-end latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("stitch_time_to_first_token_seconds", "Time to first token", ["endpoint"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("stitch_time_per_output_token_seconds", "Time per output token", ["endpoint"],
                              buckets=TOKEN_BUCKETS, registry=r)
        self.tokens_in = Counter("stitch_tokens_in", "Input tokens read", ["endpoint"], registry=r)
        self.tokens_out = Counter("stitch_tokens_out", "Output tokens generated", ["endpoint"], registry=r)
        self.adapter_requests = Counter("stitch_adapter_requests", "Requests per adapter (bounded labels)",
                                        ["adapter"], registry=r)
        self.adapter_label = AdapterLabels(adapter_label_limit)
        self.replicas = ReplicaCollector()
        r.register(self.replicas)

    def observe(self, endpoint: str, status: int, seconds: float, adapter: str | None = None,
                tokens_in: int = 0, tokens_out: int = 0) -> None:
        """Record one finished request."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if tokens_in:
            self.tokens_in.labels(endpoint).inc(tokens_in)
        if tokens_out:
            self.tokens_out.labels(endpoint).inc(tokens_out)
        if status < 400:
            self.adapter_requests.labels(self.adapter_label(adapter)).inc()

    def observe_tokens(self, endpoint: str, ttft: float, seconds: float, completion_tokens: int) -> None:
        """Time to first token, and time per output token after the first."""
        self.ttft.labels(endpoint).observe(ttft)
        if completion_tokens > 1:
            self.tpot.labels(endpoint).observe((seconds - ttft) / (completion_tokens - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
