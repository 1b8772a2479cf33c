"""The notifier's Prometheus metrics (`tocsin_notifier_*`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ATTEMPT_SECONDS",
    "DEAD_LETTERED",
    "DUPLICATES_SUPPRESSED",
    "FAILED",
    "INHIBITED",
    "RATE_LIMITED",
    "RECEIVER_BUSY",
    "SENDS_OPEN",
    "SENT",
]

SENT = Counter(
    "tocsin_notifier_sent", "Notifications delivered, by receiver type.", ["receiver_type"]
)
FAILED = Counter(
    "tocsin_notifier_failed",
    "Failed send attempts, by receiver type and kind (temporary, permanent).",
    ["receiver_type", "kind"],
)
ATTEMPT_SECONDS = Histogram(
    "tocsin_notifier_attempt_duration_seconds",
    "Duration of one send attempt, by receiver type.",
    ["receiver_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DEAD_LETTERED = Counter(
    "tocsin_notifier_dead_lettered",
    "Messages moved to the dead-letter queue, by receiver type and reason.",
    ["receiver_type", "reason"],
)
DUPLICATES_SUPPRESSED = Counter(
    "tocsin_notifier_duplicates_suppressed",
    "Sends skipped because the notification log showed them claimed or done.",
)
RATE_LIMITED = Counter(
    "tocsin_notifier_rate_limited", "Sends delayed by a receiver's rate limit.", ["receiver_type"]
)
RECEIVER_BUSY = Counter(
    "tocsin_notifier_receiver_busy",
    "Sends put back untried because no send slot of their receiver came free, by receiver type.",
    ["receiver_type"],
)
SENDS_OPEN = Gauge(
    "tocsin_notifier_sends_open",
    "Sends open on the send loop (holding a slot of their receiver), by receiver type.",
    ["receiver_type"],
)
INHIBITED = Counter("tocsin_notifier_inhibited", "Alerts left out of a notification by inhibition.")
