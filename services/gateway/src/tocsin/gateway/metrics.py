"""The gateway's Prometheus metrics (`tocsin_gateway_*`, `tocsin_ws_*`, base units).

Counts on the hot path (one per delivery) are plain integers in `Stats`, read by
a collector at scrape time, so a delivery costs an addition, not a locked metric
update. Labels are bounded: close-code names, limit names, true/false.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tocsin.gateway.websocket import LoopLag

__all__ = ["QueueDepths", "Stats", "StatsCollector", "e2e_latency", "publish_to_send"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

publish_to_send = Histogram(
    "tocsin_gateway_publish_to_send_seconds",
    "From the event's arrival on pub/sub to its first socket send in this process.",
    buckets=_LATENCY_BUCKETS,
)
e2e_latency = Histogram(
    "tocsin_e2e_latency_seconds",
    "From ingest receiving the alert to the gateway's first socket send of its event.",
    buckets=_LATENCY_BUCKETS,
)


@dataclass
class Stats:
    """Plain counters of one gateway process."""

    connections: int = 0
    subscriptions: int = 0
    events_received: int = 0
    deliveries: int = 0  # of closed sessions; open ones count their own
    dropped: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    recoveries: Counter[str] = field(default_factory=Counter)
    limit_breaches: Counter[str] = field(default_factory=Counter)
    pubsub_reconnects: int = 0
    pubsub_lag: float = 0.0


QueueDepths = Callable[[], Iterable[int]]


class StatsCollector(Collector):
    """Exposes `Stats` and the outbound queue depths at scrape time."""

    def __init__(
        self,
        stats: Stats,
        depths: QueueDepths,
        deliveries: Callable[[], int],
        lag: LoopLag,
    ) -> None:
        self._stats = stats
        self._depths = depths
        self._deliveries = deliveries
        self._lag = lag

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield GaugeMetricFamily("tocsin_ws_connections", "Open sockets.", value=s.connections)
        yield GaugeMetricFamily(
            "tocsin_ws_subscriptions", "Channel subscriptions of open sockets.", s.subscriptions
        )
        yield CounterMetricFamily(
            "tocsin_gateway_events_received", "Events read from pub/sub.", s.events_received
        )
        yield CounterMetricFamily(
            "tocsin_ws_events_delivered", "Event frames handed to sockets.", self._deliveries()
        )
        yield _labelled(
            "tocsin_ws_deliveries_dropped", "Frames not delivered.", "reason", s.dropped
        )
        yield _labelled("tocsin_ws_disconnects", "Sockets closed.", "code", s.disconnects)
        yield _labelled(
            "tocsin_ws_recoveries",
            "Subscriptions resumed from an offset.",
            "recovered",
            s.recoveries,
        )
        yield _labelled(
            "tocsin_ws_limit_breaches", "Connections or frames refused by a limit.", "limit",
            s.limit_breaches,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "tocsin_gateway_loop_lag_seconds",
            "How late the event loop runs (its last samples, smoothed); admission's measure.",
            self._lag.recent,
        )
        yield CounterMetricFamily(
            "tocsin_ws_late_pongs_read",
            "Pongs read only after their deadline, in the look taken after the loop polled "
            "(they arrived while it was busy): judged on time.",
            self._lag.late_pongs_read,
        )
        yield CounterMetricFamily(
            "tocsin_gateway_pubsub_reconnects", "Pub/sub reconnects.", s.pubsub_reconnects
        )
        yield GaugeMetricFamily(
            "tocsin_gateway_pubsub_lag_seconds",
            "Age of the last health probe when it came back through pub/sub.",
            s.pubsub_lag,
        )
        depths = list(self._depths())
        yield GaugeMetricFamily(
            "tocsin_ws_outbound_queue_frames", "Frames waiting in all outbound queues.", sum(depths)
        )
        yield GaugeMetricFamily(
            "tocsin_ws_outbound_queue_max_frames",
            "Frames waiting in the fullest outbound queue.",
            max(depths, default=0),
        )


def _labelled(name: str, doc: str, label: str, counts: Counter[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def register(collector: StatsCollector, registry: CollectorRegistry = REGISTRY) -> None:
    """Register `collector`, replacing none: one gateway app per process."""
    registry.register(collector)
