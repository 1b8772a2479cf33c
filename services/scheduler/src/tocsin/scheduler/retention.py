"""Retention: remove what is past its retention, a small batch per Redis call.

- resolved alerts last changed before the alert cutoff, with everything keyed
  by them, their index entries and their fingerprint state, one atomic step
  per alert (`tocsin.scheduler.alertdata.delete_ended_alerts`); an open alert
  is kept however long it fires (docs/storage.md);
- channel stream entries older than the stream cutoff, found by reading a few
  entries at a time from the oldest and cut with `XTRIM MINID`. Entry ids are
  offsets, not times, so an entry's age is read from its frame; a stream whose
  frames carry no time is left to its length cap.

Every call touches at most `batch` keys or entries, so none holds Redis for
more than a few milliseconds; a run stops after `max_batches` and the next run
continues.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis import Redis

from tocsin.common import keys
from tocsin.scheduler import alertdata

__all__ = ["RetentionPolicy", "enforce_retention", "frame_time"]


@dataclass(frozen=True)
class RetentionPolicy:
    """How long things are kept, and how much one call may touch."""

    alert_seconds: float
    stream_seconds: float
    batch: int = 200
    max_batches: int = 1000


def frame_time(frame: bytes | str) -> float | None:
    """When the event in a stream frame happened (epoch s), if the frame says."""
    try:
        data = json.loads(frame).get("data", {})
    except (ValueError, AttributeError):
        return None
    if not isinstance(data, dict):
        return None
    for candidate in (data.get("received_at"), data.get("at"), data.get("published_at")):
        if isinstance(candidate, int | float):
            return float(candidate)
    alert = data.get("alert")
    if isinstance(alert, dict):
        for field in ("updated_ts", "last_seen_ts"):
            if isinstance(alert.get(field), int | float):
                return float(alert[field])
    return None


def _remove_alerts(redis: Redis, cutoff: float, policy: RetentionPolicy) -> int:
    # Candidates come from the resolved index: an open alert's last-change score
    # stays put while it repeats, so the time index alone would remove alerts
    # that are still firing. Those left alone (changed meanwhile) are stepped over.
    index = keys.alert_index("status", "resolved")
    removed = left = 0
    for _ in range(policy.max_batches):
        ids: list[bytes] = redis.zrangebyscore(  # type: ignore[assignment]
            index, "-inf", f"({cutoff}", start=left, num=policy.batch
        )
        if not ids:
            break
        done = alertdata.delete_ended_alerts(redis, [i.decode() for i in ids], cutoff)
        removed += done
        left += len(ids) - done
    return removed


def _trim_stream(redis: Redis, stream: bytes, cutoff: float, policy: RetentionPolicy) -> int:
    removed = 0
    for _ in range(policy.max_batches):
        entries: list[tuple[bytes, dict[bytes, bytes]]] = redis.xrange(  # type: ignore[assignment]
            stream, "-", "+", count=policy.batch
        )
        if not entries:
            return removed
        for entry_id, fields in entries:
            moment = frame_time(fields.get(b"f", b""))
            if moment is None or moment >= cutoff:
                return removed + int(redis.xtrim(stream, minid=entry_id, approximate=False))
        # The whole batch is old: cut just past its last entry and read on.
        millis, _, seq = entries[-1][0].partition(b"-")
        past_last = millis + b"-" + str(int(seq or b"0") + 1).encode()
        removed += int(redis.xtrim(stream, minid=past_last, approximate=False))
        if len(entries) < policy.batch:
            return removed
    return removed


def enforce_retention(redis: Redis, now: float, policy: RetentionPolicy) -> dict[str, Any]:
    """Remove everything past retention; returns what was removed."""
    alerts = _remove_alerts(redis, now - policy.alert_seconds, policy)
    entries = 0
    streams = 0
    pattern = keys.channel_stream("*")
    for stream in redis.scan_iter(match=pattern, count=policy.batch, _type="stream"):
        streams += 1
        entries += _trim_stream(redis, stream, now - policy.stream_seconds, policy)
    return {"alerts_removed": alerts, "stream_entries_removed": entries, "streams": streams}
