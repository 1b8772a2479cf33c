"""The alert and event envelopes, validated with msgspec.

`AlertIn` is what a producer sends in Tocsin's own format (strict: unknown
fields are refused). `QueuedAlert` is what ingest puts on the `alerts` queue,
and `StoredAlert` what the processor keeps and publishes.
"""

from __future__ import annotations

import functools
import random
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Literal

import fnv_c  # type: ignore[import-untyped]  # no stubs; one function, bytes -> int
import msgspec

from tocsin.common import keys
from tocsin.common.errors import FieldError, InvalidBodyError

__all__ = [
    "MAX_LABELS",
    "AlertAction",
    "AlertIn",
    "FieldError",
    "InvalidBodyError",
    "NotificationRequest",
    "Path",
    "QueuedAlert",
    "Severity",
    "Status",
    "StoredAlert",
    "decode_alerts",
    "fingerprint",
    "label_set",
    "label_set_fingerprint",
    "new_alert_id",
    "rfc3339",
    "utc_now",
]

Severity = Literal["critical", "error", "warning", "info"]
Status = Literal["firing", "resolved"]
# The ingest path an alert came by; each has its own resolve rule (docs/lifecycle.md).
Path = Literal["native", "alertmanager", "prometheus", "pagerduty"]

MAX_LABELS = 64
ShortText = Annotated[str, msgspec.Meta(max_length=256)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
LabelName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
LabelValue = Annotated[str, msgspec.Meta(max_length=1024)]
Labels = Annotated[dict[LabelName, LabelValue], msgspec.Meta(max_length=MAX_LABELS)]
Annotations = Annotated[
    dict[LabelName, Annotated[str, msgspec.Meta(max_length=8192)]],
    msgspec.Meta(max_length=MAX_LABELS),
]


class AlertIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One alert in Tocsin's native producer format."""

    name: Name
    severity: Severity
    status: Status = "firing"
    source: ShortText = ""
    service: ShortText = ""
    summary: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    labels: Labels = msgspec.field(default_factory=dict)
    annotations: Annotations = msgspec.field(default_factory=dict)
    dedup_key: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    # RFC 3339 with an offset; ingest normalises to UTC before enqueueing.
    starts_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    ends_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    generator_url: Annotated[str, msgspec.Meta(max_length=2048)] | None = None


class QueuedAlert(msgspec.Struct, kw_only=True):
    """An accepted alert as it travels on the `alerts` queue."""

    id: str
    fingerprint: str
    received_at: float
    producer: str
    alert: AlertIn
    path: Path = "native"


class StoredAlert(msgspec.Struct, kw_only=True):
    """The alert record the processor stores and publishes.

    `status` is `firing`, `acknowledged` or `resolved`; `silenced` and
    `flapping` are flags beside it. `count` is the number of producer messages
    deduplicated into this record. The `*_ts` fields are epoch seconds, for
    arithmetic (time-to-ack, retention); `transitions` is the length of the
    alert's timeline, so `{id}:{n}` names its n-th transition.
    """

    id: str
    fingerprint: str
    name: str
    severity: Severity
    status: str
    source: str
    service: str
    summary: str
    labels: dict[str, str]
    annotations: dict[str, str]
    producer: str
    count: int
    first_seen: str
    last_seen: str
    starts_at: str | None = None
    ends_at: str | None = None
    generator_url: str | None = None
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    resolved_at: str | None = None
    resolved_by: str | None = None
    silenced: bool = False
    flapping: bool = False
    fingerprint_rule: str = ""
    first_seen_ts: float = 0.0
    last_seen_ts: float = 0.0
    updated_ts: float = 0.0
    transitions: int = 0


class AlertAction(msgspec.Struct, kw_only=True):
    """A user's (or a producer's) action on an alert, applied by the processor.

    The alert is named by `alert_id`, or by `fingerprint` when the sender only
    knows the dedup key (a PagerDuty acknowledge).
    """

    id: str
    action: Literal["acknowledge", "unacknowledge", "resolve"]
    alert_id: str | None = None
    fingerprint: str | None = None
    by: str = ""
    comment: str = ""
    at: float = 0.0


class NotificationRequest(msgspec.Struct, kw_only=True):
    """One notifying transition of one alert, enqueued by the processor for the notifier.

    `id` is unique per transition (alert id plus its transition sequence), so a
    redelivered message is recognisable.
    """

    id: str
    transition: Literal["firing", "resolved", "acknowledged", "flapping", "escalated"]
    alert: StoredAlert
    at: float


_PATH = re.compile(r" - at `(?P<path>[^`]*)`$")
_alerts_decoder = msgspec.json.Decoder(AlertIn | list[AlertIn])


def decode_alerts(body: bytes) -> tuple[list[AlertIn], bool]:
    """Decode one alert or a batch; return the alerts and whether it was a batch.

    Raises `FieldError`-carrying `InvalidBodyError` on malformed JSON or schema errors.
    """
    try:
        decoded = _alerts_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidBodyError([_field_error(str(exc))]) from None
    except msgspec.DecodeError as exc:
        raise InvalidBodyError([FieldError(path="$", reason=f"malformed JSON: {exc}")]) from None
    if isinstance(decoded, list):
        return decoded, True
    return [decoded], False


def _field_error(message: str) -> FieldError:
    match = _PATH.search(message)
    if match is None:
        return FieldError(path="$", reason=message)
    return FieldError(path=match["path"], reason=message[: match.start()])


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_alert_id(fingerprint: str) -> str:
    """A time-ordered, unique id: 48-bit milliseconds, 64 random bits, then the
    fingerprint's hash tag (16 bits), hex: its alert's keys share the fingerprint's slot."""
    # Unique, not secret (reading an alert takes a token): the seeded PRNG, which
    # Python reseeds in a forked child, rather than a getrandom(2) call per alert.
    millis = time.time_ns() // 1_000_000
    return f"{millis:012x}{random.getrandbits(64):016x}{keys.fingerprint_tag(fingerprint)}"


@functools.lru_cache(maxsize=4096)  # a batch's alerts share their received_at
def rfc3339(timestamp: float) -> str:
    """The one timestamp format of every record, event and answer: UTC, milliseconds, `Z`."""
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def label_set(alert: AlertIn) -> dict[str, str]:
    """The alert's identity as Alertmanager sees it: its labels, with `alertname` its name."""
    return {"alertname": alert.name, **alert.labels}


# Prometheus's label-set fingerprint (common/model: FNV-1a 64 over the sorted
# label names and values, each followed by the byte 0xff), so an alert pushed to
# /api/v2/alerts, sent natively, or relayed by Alertmanager's webhook (whose
# `fingerprint` is this same hash) is one identity. The hash runs in C (fnv-c):
# byte by byte in Python it was the largest cost of accepting one alert.
_SEPARATOR = b"\xff"


def label_set_fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: 16 hex digits."""
    parts = []
    for name in sorted(labels):
        parts.append(name.encode())
        parts.append(labels[name].encode())
    parts.append(b"")  # the last value's separator
    return f"{fnv_c.fnv1a_64(_SEPARATOR.join(parts)):016x}"


def fingerprint(alert: AlertIn) -> str:
    """The dedup identity of an alert.

    The producer's `dedup_key` wins verbatim; otherwise Alertmanager's
    fingerprint of the label set (`label_set`), whichever path the alert came by.
    """
    if alert.dedup_key:
        return alert.dedup_key
    return label_set_fingerprint(label_set(alert))
