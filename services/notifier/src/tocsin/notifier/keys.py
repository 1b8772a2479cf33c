"""The notifier's Redis key layout, all under `tocsin:notify:`.

| key | type | holds |
| --- | --- | --- |
| `tocsin:notify:group:{group}` | hash | `seq`, `last_firing`, `last_sent_at` of a group |
| `tocsin:notify:group:{group}:alerts` | hash | fingerprint -> the alert's latest `GroupedAlert` |
| `tocsin:notify:group:{group}:pending` | string | token of the group's one scheduled flush |
| `tocsin:notify:claim:{receiver}:{group}:{seq}:{state}` | string | `state|token` claim |
| `tocsin:notify:firing` | hash | fingerprint -> labels and time of firing alerts (inhibition) |
| `tocsin:notify:resolved` | sorted set | fingerprints by resolve time (a day), for ordering |
| `tocsin:notify:alertlog:{alert_id}` | list | the attempts and outcomes concerning an alert |
| `tocsin:notify:dlq` | hash | dead letter id -> entry (JSON) |
| `tocsin:notify:rate:{receiver}` | string | the receiver's limiter (GCRA arrival time) |
| `tocsin:notify:deliveries:{message_id}` | string | deliveries of one queue message |
"""

from __future__ import annotations

from tocsin.common import keys as common_keys

__all__ = [
    "DEAD_LETTERS",
    "FIRING",
    "RESOLVED",
    "alert_log",
    "claim",
    "deliveries",
    "group",
    "group_alerts",
    "group_pending",
    "rate",
]

_PREFIX = "tocsin:notify:"
DEAD_LETTERS = f"{_PREFIX}dlq"
FIRING = f"{_PREFIX}firing"
RESOLVED = f"{_PREFIX}resolved"


def group(group_key: str) -> str:
    return f"{_PREFIX}group:{group_key}"


def group_alerts(group_key: str) -> str:
    return f"{_PREFIX}group:{group_key}:alerts"


def group_pending(group_key: str) -> str:
    return f"{_PREFIX}group:{group_key}:pending"


def claim(receiver: str, group_key: str, seq: int, state_hash: str) -> str:
    return f"{_PREFIX}claim:{receiver}:{group_key}:{seq}:{state_hash}"


def alert_log(alert_id: str) -> str:
    # Others read this log too, so its name lives in the common key layout.
    return common_keys.notification_log(alert_id)


def rate(receiver: str) -> str:
    return f"{_PREFIX}rate:{receiver}"


def deliveries(message_id: str) -> str:
    return f"{_PREFIX}deliveries:{message_id}"
