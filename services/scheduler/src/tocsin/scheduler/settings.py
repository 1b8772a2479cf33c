"""Scheduler settings."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import setting
from tocsin.common.queue import QueueConsumerSettings

__all__ = ["DEFAULT_PORT", "SchedulerSettings"]

DEFAULT_PORT = 8084


@dataclasses.dataclass(frozen=True)
class SchedulerSettings(QueueConsumerSettings):
    """Settings of the scheduler service."""

    schedules: str = setting(
        "",
        "Schedules as JSON (a list of {name, job, cron, timezone, catch_up}) or the path of "
        "a JSON file; empty: the built-in schedules (see docs/scheduler.md).",
    )
    tick_ms: int = setting(200, "How often each replica evaluates the schedules, in ms.")
    misfire_grace_seconds: float = setting(
        10.0,
        "A fire time older than this when first seen was missed (no replica ran): it is "
        "handled by the job's catch-up policy instead of being fired as due.",
    )
    claim_ttl_seconds: int = setting(
        3600, "Lifetime of a per-run claim key (must exceed the misfire grace)."
    )
    redispatch_after_seconds: float = setting(
        10.0,
        "Lease of a claimed run, in s: the worker running it renews it; a run not finished "
        "when its lease lapses (its message lost, its worker dead) is queued again.",
    )
    run_workers: bool = setting(True, "Run the job worker threads in this process.")
    worker_threads: int = setting(2, "Worker threads of the job queues' consumer.")
    job_time_limit_seconds: int = setting(300, "Longest a job may run before it is stopped.")
    job_max_retries: int = setting(3, "Retries of a failed job run (same run id).")
    run_record_days: int = setting(7, "How long a finished run id is remembered, in days.")
    history_cap: int = setting(10_000, "Approximate number of run records kept in the history.")
    retention_days: int = setting(
        30,
        "Resolved alerts (with their timelines, notification logs and fingerprint state) "
        "unchanged for longer than this are removed, in days; open alerts are kept.",
    )
    stream_retention_days: float = setting(
        7.0, "Channel stream entries older than this are trimmed."
    )
    retention_batch: int = setting(
        200, "Keys examined or removed per Redis call by retention, to keep each call short."
    )
    analytics_top_n: int = setting(10, "Noisy fingerprints listed in daily analytics.")
    pattern_window_seconds: int = setting(
        3600, "Recent window examined for flapping, storms and noisy sources, in seconds."
    )
    pattern_flap_episodes: int = setting(
        4, "Times one fingerprint fired, resolving in between, in the window to count as flapping."
    )
    storm_window_seconds: int = setting(300, "Window whose alert rate is compared to baseline.")
    storm_factor: float = setting(5.0, "Rate over baseline rate that makes a storm.")
    storm_min_alerts: int = setting(20, "Fewest alerts in the storm window to call a storm.")
    noisy_duplicate_ratio: float = setting(
        0.8, "Share of duplicate occurrences above which a source is noisy."
    )
    noisy_min_occurrences: int = setting(20, "Fewest occurrences before a source can be noisy.")
    recurring_days: int = setting(
        3, "Distinct days a fingerprint fired in the same hour to count as recurring."
    )
    recurring_lookback_days: int = setting(14, "Days examined for recurring alerts.")
    prediction_window_seconds: float = setting(
        300.0, "Window of the transient probability: P(an incident ends by itself within it), in s."
    )
    prediction_min_episodes: int = setting(
        5, "Fewest past episodes a prediction rests on; with fewer none is made (and none pauses)."
    )
    prediction_history_cap: int = setting(
        200, "Past episodes kept per fingerprint, alertname+service and alertname."
    )
    volume_lookback_days: int = setting(14, "Days of hourly counts the volume forecast fits.")
    volume_interval: float = setting(
        0.99, "Coverage of the volume forecast's prediction interval (storm above its top)."
    )
