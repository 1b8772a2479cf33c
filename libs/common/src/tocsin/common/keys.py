"""The Redis key layout, in one place.

Every key Tocsin writes starts with `tocsin:`; the part after it names the
purpose. Dramatiq's own queue keys live under `tocsin:dramatiq:`.

| key | type | holds |
| --- | --- | --- |
| `tocsin:alert:{id}` | string (JSON) | the stored alert record |
| `tocsin:dedup:{fingerprint}` | string | the id of the alert that owns the fingerprint |
| `tocsin:chan:{channel}` | hash | `offset` (last assigned) and `epoch` of a channel |
| `tocsin:stream:{channel}` | stream | the capped delivery log of a channel, entry id `{offset}-1` |
| `tocsin:live:{channel}` | pub/sub | live events of a channel |
| `tocsin:apikey:{key_id}` | hash | a producer API key: salted hash, producer, label defaults |
| `tocsin:ratelimit:{producer}` | hash | a producer's ingest token bucket (`tokens`, `at`) |
| `tocsin:idempotency:{producer}:{key}` | string | the first answer to an `Idempotency-Key` (24 h) |
"""

from __future__ import annotations

__all__ = [
    "DRAMATIQ_NAMESPACE",
    "PREFIX",
    "alert",
    "api_key",
    "channel_meta",
    "channel_stream",
    "dedup",
    "idempotency",
    "live",
    "rate_bucket",
]

PREFIX = "tocsin:"
DRAMATIQ_NAMESPACE = "tocsin:dramatiq"


def alert(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}"


def dedup(fingerprint: str) -> str:
    return f"{PREFIX}dedup:{fingerprint}"


def channel_meta(channel: str) -> str:
    return f"{PREFIX}chan:{channel}"


def channel_stream(channel: str) -> str:
    return f"{PREFIX}stream:{channel}"


def live(channel: str) -> str:
    return f"{PREFIX}live:{channel}"


def api_key(key_id: str) -> str:
    return f"{PREFIX}apikey:{key_id}"


def rate_bucket(producer: str) -> str:
    return f"{PREFIX}ratelimit:{producer}"


def idempotency(producer: str, key: str) -> str:
    return f"{PREFIX}idempotency:{producer}:{key}"
