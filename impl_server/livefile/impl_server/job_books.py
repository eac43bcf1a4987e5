"""What this process's job runner has done: jobs ended by kind and result, and how long they
ran, kept as Prometheus-style histograms (cumulative buckets, a sum and a count) for
``/metrics``. Plain numbers on the event loop's thread, like the other counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Seconds: from a small repack (well under a second) to the default time limit (an hour).
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass
class Histogram:
    buckets: tuple[float, ...] = DURATION_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.total += value
        self.count += 1


@dataclass
class JobBooks:
    ended: Counter[tuple[str, str]] = field(default_factory=Counter)  # by kind and result
    durations: dict[str, Histogram] = field(default_factory=dict)  # by kind

    def record(self, kind: str, result: str, seconds: float) -> None:
        self.ended[(kind, result)] += 1
        self.durations.setdefault(kind, Histogram()).observe(seconds)
