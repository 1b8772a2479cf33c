"""Processor settings."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import setting
from tocsin.common.queue import QueueConsumerSettings

__all__ = ["DEFAULT_PORT", "ProcessorSettings"]

DEFAULT_PORT = 8082


@dataclasses.dataclass(frozen=True)
class ProcessorSettings(QueueConsumerSettings):
    """Settings of the processor service."""

    dedup_window_seconds: float = setting(
        300.0, "Deduplication window: a firing repeat within it is a duplicate, in seconds."
    )
    flap_threshold: int = setting(
        4, "Firing/resolved changes within the flap window above which an alert is flapping."
    )
    flap_window_seconds: float = setting(600.0, "Window over which flips are counted, in s.")
    auto_resolve_seconds: float = setting(
        300.0,
        "Resolve a native or /api/v2/alerts alert without ends_at whose producer stopped "
        "re-sending for this long, in s (0: never). Alertmanager webhook and PagerDuty "
        "alerts are resolved by their producer (docs/lifecycle.md).",
    )
    alertmanager_resolve_seconds: float = setting(
        0.0,
        "Fallback for Alertmanager receivers with send_resolved: false: resolve a webhook "
        "alert not re-sent for this long, in s (0: never, Alertmanager owns resolution; "
        "set it above the route's repeat_interval).",
    )
    sweep_interval_seconds: float = setting(
        5.0,
        "How often the sweep resolves alerts past their deadline (ends_at or a resolve "
        "timeout), in s.",
    )
    applied_ttl_seconds: int = setting(
        86_400, "How long applied message ids are remembered for idempotency, in seconds."
    )
    timeline_cap: int = setting(100, "Most transitions kept on one alert's timeline.")
    update_event_interval_seconds: float = setting(
        1.0, "Least time between two `alert.updated` events of one duplicated alert, in s."
    )
    batch_max_messages: int = setting(200, "Most queue messages the batch consumer takes at once.")
    stream_cap: int = setting(10_000, "Approximate number of events kept per channel stream.")
