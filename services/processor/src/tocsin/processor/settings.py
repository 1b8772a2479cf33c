"""Processor settings."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import CommonSettings, setting

__all__ = ["DEFAULT_PORT", "ProcessorSettings"]

DEFAULT_PORT = 8082


@dataclasses.dataclass(frozen=True)
class ProcessorSettings(CommonSettings):
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
        "Resolve an open alert whose producer stopped re-sending for this long, in s (0: never).",
    )
    sweep_interval_seconds: float = setting(
        5.0, "How often the auto-resolve sweep looks for stale alerts, in seconds."
    )
    applied_ttl_seconds: int = setting(
        86_400, "How long applied message ids are remembered for idempotency, in seconds."
    )
    retention_days: int = setting(
        30, "How long alerts are kept (the scheduler enforces it; dedup state expires with it)."
    )
    timeline_cap: int = setting(100, "Most transitions kept on one alert's timeline.")
    update_event_interval_seconds: float = setting(
        1.0, "Least time between two `alert.updated` events of one duplicated alert, in s."
    )
    batch_max_messages: int = setting(200, "Most queue messages the batch consumer takes at once.")
    stream_cap: int = setting(10_000, "Approximate number of events kept per channel stream.")
    queue_heartbeat_timeout_ms: int = setting(
        8_000,
        "Silence after which a worker counts as dead and its unacked messages are requeued, "
        "in ms (its messages run again within this plus 2 s).",
    )
