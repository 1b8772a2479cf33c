"""The scale benchmark's bookkeeping, kept pure so that it is unit-tested: a mergeable
latency histogram, and the per-socket tally of events received, doubled and lost."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Histogram", "Tally", "percentile"]

# Buckets grow by 2%: a percentile read from the histogram is within 2% of the true one.
_RATIO = 1.02
_LOG_RATIO = math.log(_RATIO)
_FLOOR = 1e-5  # 10 us: everything below shares the first bucket


def percentile(values: Iterable[float], fraction: float) -> float:
    """The `fraction` percentile of `values` (nearest rank), NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


@dataclass
class Histogram:
    """Latencies in seconds, counted in log-spaced buckets; merges by adding counts."""

    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0
    maximum: float = 0.0

    def add(self, seconds: float) -> None:
        bucket = 0 if seconds <= _FLOOR else int(math.log(seconds / _FLOOR) / _LOG_RATIO) + 1
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.total += 1
        if seconds > self.maximum:
            self.maximum = seconds

    def merge(self, other: Histogram) -> None:
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)

    def percentile(self, fraction: float) -> float:
        """The bucket holding the `fraction` percentile, as its upper bound (NaN if empty)."""
        if not self.total:
            return float("nan")
        rank = max(1, math.ceil(fraction * self.total))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(self.maximum, _FLOOR * _RATIO**bucket)
        return self.maximum

    def to_json(self) -> dict[str, object]:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "max": self.maximum}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Histogram:
        counts = data.get("counts")
        histogram = cls()
        if isinstance(counts, Mapping):
            histogram.counts = {int(k): int(v) for k, v in counts.items()}
        histogram.total = sum(histogram.counts.values())
        maximum = data.get("max", 0.0)
        histogram.maximum = float(maximum) if isinstance(maximum, int | float) else 0.0
        return histogram


@dataclass
class Tally:
    """Events a set of sockets received on offset-numbered channels, and what went wrong.

    Each channel's offsets rise by one per event, so a socket knows by itself what it
    missed (a jump), what it got twice (an offset not above its last), and, compared
    with the channel's head at the end, what never came.
    """

    events: int = 0
    duplicates: int = 0
    lost: int = 0
    resets: int = 0

    def event(self, last: int, offset: int) -> int:
        """Count one event at `offset` on a channel whose last offset was `last`; the new last."""
        if offset <= last:
            self.duplicates += 1
            return last
        self.events += 1
        if offset > last + 1:
            self.lost += offset - last - 1
        return offset

    def resubscribed(self, last: int, announced: int, *, first: bool, recovered: bool) -> int:
        """A subscription answered with `announced` (events follow after it); the new last.

        The first subscription starts wherever the channel stands. A resumed one should
        be announced at its own last offset: anything between the two was skipped, and
        when the gateway could not replay (`recovered` false) it is gone.
        """
        if first:
            return announced
        if not recovered:
            self.resets += 1
        if announced > last:
            self.lost += announced - last
        return announced if not recovered else max(last, announced)

    def tail(self, last: int, head: int) -> None:
        """At the end: the channel reached `head`, this socket only `last`."""
        if head > last:
            self.lost += head - last

    def merge(self, other: Tally) -> None:
        self.events += other.events
        self.duplicates += other.duplicates
        self.lost += other.lost
        self.resets += other.resets
