"""The adapter cache counters in a Stitch server's Prometheus text (GET /metrics), summed over replicas."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from prometheus_client.parser import text_string_to_metric_families

# Counter family names (Prometheus text adds ``_total`` to the samples).
CACHE_COUNTERS = ("stitch_cache_hits", "stitch_cache_misses", "stitch_cache_host_hits", "stitch_cache_loads",
                  "stitch_cache_load_failures", "stitch_cache_device_evictions", "stitch_cache_host_evictions",
                  "stitch_cache_load_seconds")


@dataclass(frozen=True)
class CacheCounters:
    """Adapter cache counters summed over the server's replicas (device hits, misses, loads ...);
    load_seconds: seconds spent reading adapters from their sources."""

    hits: float = 0.0
    misses: float = 0.0
    host_hits: float = 0.0
    loads: float = 0.0
    load_failures: float = 0.0
    device_evictions: float = 0.0
    host_evictions: float = 0.0
    load_seconds: float = 0.0

    def minus(self, earlier: "CacheCounters") -> "CacheCounters":
        return CacheCounters(**{k: v - getattr(earlier, k) for k, v in asdict(self).items()})

    def hit_rate(self) -> float | None:
        """Device hits over acquires (hits + misses); None when there were none."""
        total = self.hits + self.misses
        return self.hits / total if total else None

    def to_dict(self) -> dict:
        return {**asdict(self), "hit_rate": self.hit_rate()}


def sample_totals(text: str) -> dict[str, float]:
    """Every sample name of a /metrics page with its values summed over labels (``x_total`` -> sum)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def cache_counters(text: str) -> CacheCounters:
    """The cache counters of a /metrics page (zero where a counter is absent)."""
    totals = sample_totals(text)
    return CacheCounters(*(totals.get(f"{name}_total", 0.0) for name in CACHE_COUNTERS))
