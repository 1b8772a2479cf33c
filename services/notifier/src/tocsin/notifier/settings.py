"""Notifier settings."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import setting
from tocsin.common.queue import QueueConsumerSettings

__all__ = ["DEFAULT_PORT", "NotifierSettings"]

DEFAULT_PORT = 8083


@dataclasses.dataclass(frozen=True)
class NotifierSettings(QueueConsumerSettings):
    """Settings of the notifier service."""

    routes_file: str = setting(
        "", "Path of the routing YAML (routes, receivers, inhibit rules); reloaded on change."
    )
    routes_poll_seconds: float = setting(
        1.0, "How often the routing file is checked for changes, in seconds."
    )
    send_threads: int = setting(
        8,
        "Worker threads of the notifier's queue consumer (accept, flush, and the send step's "
        "claim and render); the sends themselves run on the send loop and hold none.",
    )
    send_timeout_seconds: float = setting(
        10.0,
        "Deadline of one send to a receiver (connect, request and answer together), in "
        "seconds; a receiver's `timeout_seconds` replaces it.",
    )
    retry_budget_seconds: float = setting(
        900.0,
        "How long failed sends of a notification are retried (timeouts, 5xx, 429) before it "
        "is dead-lettered, in s from its first attempt.",
    )
    retry_min_backoff_ms: int = setting(500, "Backoff before the first retry, in ms.")
    retry_max_backoff_ms: int = setting(30_000, "Cap of the exponential retry backoff, in ms.")
    receiver_concurrency: int = setting(
        4,
        "Sends open to one receiver at once per process (on the send loop); a receiver that "
        "hangs holds this many of its own send slots, each for at most its timeout.",
    )
    max_deliveries: int = setting(
        10, "Deliveries of one queue message (crash redeliveries included) before dead-lettering."
    )
    digest_threshold: int = setting(
        20, "A group with more alerts than this is sent as a digest (counts plus the first N)."
    )
    digest_sample: int = setting(10, "Alerts listed in a digest (the N above).")
    claim_lease_seconds: float = setting(
        0.0,
        "Lease of an in-progress send claim, in seconds (0: the receiver's timeout plus 5 s, "
        "which is also the least it can be).",
    )
    log_retention_seconds: int = setting(
        7 * 86400, "How long the per-alert notification log is kept, in seconds."
    )
    shutdown_timeout_seconds: float = setting(
        25.0, "On SIGTERM, how long in-flight sends may take before the worker stops, in s."
    )
