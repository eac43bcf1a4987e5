"""Small helpers for benchmarks that collect samples: percentiles, thinning samples for the
JSON file, and raising the open-file limit."""

from __future__ import annotations

import resource
import statistics


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation; ``values`` need not be sorted."""
    if not values:
        raise ValueError("no samples")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(p * 10) - 1]


def thin(values: list[float], at_most: int = 5000) -> list[float]:
    """At most ``at_most`` of the sorted ``values``, evenly spaced: the distribution (and so a
    CDF or box plot) survives, the JSON file stays small."""
    ordered = sorted(values)
    if len(ordered) <= at_most:
        return ordered
    step = (len(ordered) - 1) / (at_most - 1)
    return [ordered[round(i * step)] for i in range(at_most)]


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
