"""Ingest's Prometheus metrics (`tocsin_ingest_*`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["ALERTS_RECEIVED", "REQUESTS_REJECTED", "REQUEST_DURATION"]

ALERTS_RECEIVED = Counter(
    "tocsin_ingest_alerts_received",
    "Alerts accepted onto the alerts queue, by producer format and producer.",
    ["format", "producer"],
)
REQUESTS_REJECTED = Counter(
    "tocsin_ingest_requests_rejected",
    "Requests refused, by reason (unauthenticated, forbidden, invalid, too_large, "
    "rate_limited, backlog, unavailable, outcome_unknown).",
    ["format", "reason"],
)
REQUEST_DURATION = Histogram(
    "tocsin_ingest_request_duration_seconds",
    "Time from request start to answer, by producer format.",
    ["format"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
