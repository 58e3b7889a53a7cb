"""Buckets: a small immutable histogram for engine statistics (exported to Prometheus by the HTTP layer)."""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, replace

BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SECONDS_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass(frozen=True)
class Buckets:
    """counts[i]: observations in (bounds[i-1], bounds[i]]; counts[-1]: above the last bound; sum: their total."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> "Buckets":
        return cls(bounds, (0,) * (len(bounds) + 1))

    def observe(self, value: float) -> "Buckets":
        counts = list(self.counts)
        counts[bisect_left(self.bounds, value)] += 1
        return replace(self, counts=tuple(counts), sum=self.sum + value)
