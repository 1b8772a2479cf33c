"""Storing alerts and publishing their events."""

from __future__ import annotations

from typing import Any

import msgspec
from redis import Redis

from tocsin.common import keys
from tocsin.common.events import EventPublisher, alert_channels
from tocsin.common.models import QueuedAlert, StoredAlert

__all__ = ["AlertStore", "to_stored"]

_encoder = msgspec.json.Encoder()


def _rfc3339(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def to_stored(queued: QueuedAlert) -> StoredAlert:
    alert = queued.alert
    seen = _rfc3339(queued.received_at)
    return StoredAlert(
        id=queued.id,
        fingerprint=queued.fingerprint,
        name=alert.name,
        severity=alert.severity,
        status=alert.status,
        source=alert.source,
        service=alert.service,
        summary=alert.summary,
        labels=alert.labels,
        annotations=alert.annotations,
        producer=queued.producer,
        count=1,
        first_seen=seen,
        last_seen=seen,
        starts_at=alert.starts_at.isoformat() if alert.starts_at else None,
        ends_at=alert.ends_at.isoformat() if alert.ends_at else None,
        generator_url=alert.generator_url,
    )


class AlertStore:
    """Writes alert records and publishes `alert.created` events, pipelined per batch."""

    def __init__(self, redis: Redis, publisher: EventPublisher, dedup_window: int) -> None:
        self._redis = redis
        self._publisher = publisher
        self._dedup_window = dedup_window

    def apply(self, batch: list[Any], traceparent: str = "") -> None:
        queued = msgspec.convert(batch, list[QueuedAlert])
        pipe = self._redis.pipeline(transaction=False)
        for item in queued:
            stored = to_stored(item)
            record = _encoder.encode(stored)
            pipe.set(keys.alert(stored.id), record)
            pipe.set(keys.dedup(stored.fingerprint), stored.id, ex=self._dedup_window)
            event = b'{"type":"alert.created","alert":' + record + b"}"
            channels = alert_channels(
                stored.service, stored.severity, stored.labels.get("team", "")
            )
            self._publisher.publish(channels, event.decode(), traceparent, pipeline=pipe)
        pipe.execute()
