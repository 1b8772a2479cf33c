"""The settings every queue consumer (processor, notifier, scheduler) reads, under one name each."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import CommonSettings, setting

__all__ = ["QueueConsumerSettings"]


@dataclasses.dataclass(frozen=True)
class QueueConsumerSettings(CommonSettings):
    """Settings of a service that consumes a queue through `tocsin.common.queue.Consumer`."""

    queue_heartbeat_timeout_ms: int = setting(
        8_000,
        "Silence after which a worker counts as dead and its unacked messages are requeued, "
        "in ms (they run again within this plus 2 s).",
        # Each service had its own name for it until this release.
        former=(
            "TOCSIN_HEARTBEAT_TIMEOUT_MS",
            "TOCSIN_WORKER_HEARTBEAT_MS",
        ),
    )
