"""Processor settings."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import CommonSettings, setting

__all__ = ["DEFAULT_PORT", "ProcessorSettings"]

DEFAULT_PORT = 8082


@dataclasses.dataclass(frozen=True)
class ProcessorSettings(CommonSettings):
    """Settings of the processor service."""

    dedup_window_seconds: int = setting(300, "Deduplication window, in seconds.")
    worker_threads: int = setting(4, "Dramatiq worker threads in the process.")
    idle_poll_ms: int = setting(
        5, "Longest wait between queue polls when idle (Dramatiq's worker timeout), in ms."
    )
    stream_cap: int = setting(10_000, "Approximate number of events kept per channel stream.")
