"""The processor's Prometheus metrics (`tocsin_processor_*`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "AUTO_RESOLVED",
    "BATCH_SIZE",
    "DEDUPLICATED",
    "FINGERPRINT_RULE",
    "MESSAGES",
    "NOTIFICATIONS",
    "PROCESSING_SECONDS",
    "SILENCES",
    "TRANSITIONS",
]

MESSAGES = Counter(
    "tocsin_processor_messages_total", "Alert messages and actions by outcome.", ["outcome"]
)
DEDUPLICATED = Counter(
    "tocsin_processor_deduplicated_total", "Alert messages folded into an existing alert."
)
TRANSITIONS = Counter(
    "tocsin_processor_transitions_total", "Alert state transitions by kind.", ["kind"]
)
NOTIFICATIONS = Counter(
    "tocsin_processor_notifications_total",
    "Notifications enqueued, by transition.",
    ["transition"],
)
BATCH_SIZE = Histogram(
    "tocsin_processor_batch_size",
    "Alerts per processed batch.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
PROCESSING_SECONDS = Histogram(
    "tocsin_processor_processing_seconds",
    "Time to apply one batch or action.",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
FINGERPRINT_RULE = Counter(
    "tocsin_processor_fingerprint_total", "Alert messages by fingerprint rule.", ["rule"]
)
AUTO_RESOLVED = Counter(
    "tocsin_processor_auto_resolved_total",
    "Alerts resolved by their deadline (ends_at or a resolve timeout).",
)
SILENCES = Gauge("tocsin_processor_silences", "Silences loaded (any state).")
