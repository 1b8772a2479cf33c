"""The job contract: which queue and actor run each job kind, and the run a message carries.

The dispatcher only needs this module to enqueue; the job bodies live in their
own modules and are bound to these actor names by `tocsin.scheduler.worker`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tocsin.common.broker import PREDICTION_QUEUE

__all__ = [
    "ANALYTICS_QUEUE",
    "JOB_QUEUES",
    "MAINTENANCE_QUEUE",
    "PATTERNS_QUEUE",
    "Run",
    "actor_name",
]

ANALYTICS_QUEUE = "analytics"
PATTERNS_QUEUE = "patterns"
MAINTENANCE_QUEUE = "maintenance"

# job kind -> queue
JOB_QUEUES: dict[str, str] = {
    "daily_analytics": ANALYTICS_QUEUE,
    "pattern_detection": PATTERNS_QUEUE,
    "cache_health": MAINTENANCE_QUEUE,
    "health_score": MAINTENANCE_QUEUE,
    "retention": MAINTENANCE_QUEUE,
    "prediction_history": PREDICTION_QUEUE,
    "volume_forecast": PREDICTION_QUEUE,
}


def actor_name(job: str) -> str:
    """The Dramatiq actor that runs `job`."""
    return f"scheduled_{job}"


class Run(msgspec.Struct, kw_only=True):
    """One run of a schedule: what the message carries. `run_id` names the fire time."""

    run_id: str
    schedule: str
    job: str
    fire: int
    params: dict[str, Any] = msgspec.field(default_factory=dict)
