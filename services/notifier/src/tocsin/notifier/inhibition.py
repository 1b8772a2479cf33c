"""Inhibition: the shared index of firing alerts, and the rules applied to a group.

Every replica records each transition in one Redis index (in transition order,
so a firing taken late by a worker thread never revives a resolved alert);
a flush reads it to find the sources that mute its alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
from redis import Redis

from tocsin.common import keys
from tocsin.notifier.message import GroupedAlert
from tocsin.notifier.routing import InhibitRule, alert_labels

__all__ = ["FiringIndex"]

_RECORD = (Path(__file__).parent / "inhibition" / "record.lua").read_text()


class _Entry(msgspec.Struct):
    """One firing alert in the index: its routing labels and transition time."""

    labels: dict[str, str]
    at: float


_decoder = msgspec.json.Decoder(_Entry)


class FiringIndex:
    """The alerts firing now, by fingerprint, with their routing labels."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._record = redis.register_script(_RECORD)

    def record(self, item: GroupedAlert) -> bool:
        """Apply one transition; False when a newer one of the same alert is already in."""
        entry = msgspec.json.encode(_Entry(alert_labels(item.alert), item.at))
        applied = self._record(
            keys=[keys.NOTIFY_FIRING, keys.NOTIFY_RESOLVED],
            args=[item.alert.fingerprint, repr(item.at), item.status, entry],
        )
        return bool(applied)

    def muted(self, items: Sequence[GroupedAlert], rules: Sequence[InhibitRule]) -> set[str]:
        """Fingerprints of `items` that a rule mutes because one of its sources fires."""
        if not rules or not items:
            return set()
        raw: dict[bytes, bytes] = self._redis.hgetall(keys.NOTIFY_FIRING)  # type: ignore[assignment]
        sources = [_decoder.decode(value).labels for value in raw.values()]
        muted = set()
        for item in items:
            labels = alert_labels(item.alert)
            if any(rule.mutes(labels, sources) for rule in rules):
                muted.add(item.alert.fingerprint)
        return muted
