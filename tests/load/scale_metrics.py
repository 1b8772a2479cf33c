"""The scale benchmark's bookkeeping, kept pure so that it is unit-tested: a mergeable
latency histogram, the per-socket tally of events received, doubled and lost, and the
ledger of pings answered late by the client against pongs the gateway judged late."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Histogram", "PongLedger", "Tally", "percentile", "read_delay_bound"]

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


def read_delay_bound(read_at: float, sample_before_last: float) -> float:
    """At most how long a frame read at `read_at` sat unread in the client's own loop.

    The client's loop runs a timer every few tens of milliseconds; `sample_before_last` is
    when the one before the latest ran. The loop polled its sockets right after it, so a
    frame that had arrived by then was read then: this frame arrived later, and waited at
    most the difference (an idle loop bounds it at about two timer periods).
    """
    return max(0.0, read_at - sample_before_last)


# The heartbeat closes a client got, by how long it had left the ping unread.
PROMPT = "answered promptly"  # within `PongLedger.prompt`: the lateness was the gateway's
SLOW = "answered slowly"  # after that, but before the gateway's pong timeout
LATE = "answered late"  # after the pong timeout: the client's starved loop alone missed it


@dataclass
class PongLedger:
    """Pings a set of clients answered and the `4002 heartbeat_timeout` closes they got.

    A client answers a ping in the same callback that reads it, so its own share of a
    pong's lateness is how long the ping sat unread (`read_delay_bound`). The gateway
    writes the ping before it writes the close, so the last ping a socket read before its
    heartbeat close is the one the close is about: if the client answered it promptly,
    the pong was late in the gateway's own reading of it, not in the client's.
    """

    prompt: float = 1.0  # seconds: a ping read within this was answered promptly
    timeout: float = 10.0  # the gateway's pong timeout
    answered: Histogram = field(default_factory=Histogram)
    answers: dict[str, int] = field(default_factory=dict)  # pings answered, by kind
    closes: dict[str, int] = field(default_factory=dict)  # heartbeat closes, by kind

    def kind(self, delay: float) -> str:
        if delay <= self.prompt:
            return PROMPT
        return SLOW if delay < self.timeout else LATE

    def ping(self, delay: float) -> None:
        """A ping read (and answered) `delay` seconds, at most, after it arrived."""
        self.answered.add(delay)
        kind = self.kind(delay)
        self.answers[kind] = self.answers.get(kind, 0) + 1

    def heartbeat_close(self, delay: float | None) -> None:
        """A heartbeat close after the last ping was answered with `delay` (None: no ping
        was read on that connection)."""
        kind = "no ping read" if delay is None else self.kind(delay)
        self.closes[kind] = self.closes.get(kind, 0) + 1

    def merge(self, other: PongLedger) -> None:
        self.answered.merge(other.answered)
        for mine, theirs in ((self.answers, other.answers), (self.closes, other.closes)):
            for kind, count in theirs.items():
                mine[kind] = mine.get(kind, 0) + count

    def to_json(self) -> dict[str, object]:
        return {
            "answered": self.answered.to_json(),
            "answers": dict(self.answers),
            "closes": dict(self.closes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object], prompt: float, timeout: float) -> PongLedger:
        ledger = cls(prompt, timeout)
        answered = data.get("answered")
        if isinstance(answered, Mapping):
            ledger.answered = Histogram.from_json(answered)
        for name in ("answers", "closes"):
            counts = data.get(name)
            if isinstance(counts, Mapping):
                setattr(ledger, name, {str(k): int(v) for k, v in counts.items()})
        return ledger
