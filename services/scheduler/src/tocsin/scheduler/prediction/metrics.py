"""The prediction stage's Prometheus metrics (docs/metrics.md), exposed by the scheduler."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

__all__ = ["PREDICTION_SECONDS", "VOLUME_STORMS"]

PREDICTION_SECONDS = Histogram(
    "tocsin_prediction_seconds",
    "Time to predict one incident: read its history, fit, store and publish.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
VOLUME_STORMS = Gauge(
    "tocsin_volume_storms",
    "Services whose last complete hour left the volume forecast's interval (likely storms), "
    "as of this process's last forecast.",
)
