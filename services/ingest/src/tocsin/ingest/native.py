"""Tocsin's own alert format, and the checks and queueing every format's alerts end with.

Every parser produces `AlertIn` values through `checked_alert`, so an alert
mapped from Alertmanager or PagerDuty meets exactly the bounds of a native one
and timestamps leave ingest in UTC; `alerts_work` turns any format's alerts
into the one queue message they become. `NativeFormat` is `POST /v1/alerts`,
which refuses in RFC 9457 problem+json with the stable `PROBLEM_TYPES`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.responses import Response

from tocsin.common.broker import PROCESS_ALERTS_ACTOR
from tocsin.common.models import (
    MAX_LABELS,
    AlertIn,
    FieldError,
    InvalidBodyError,
    Path,
    QueuedAlert,
    decode_alerts,
    fingerprint,
    new_alert_id,
)
from tocsin.common.problems import problem
from tocsin.ingest.formats import Format, Refusal, Work
from tocsin.ingest.producers import Producer

__all__ = [
    "PROBLEM_TYPES",
    "AcceptedAlert",
    "AlertsAccepted",
    "NativeFormat",
    "alerts_work",
    "checked_alert",
    "field_error",
    "go_time",
    "normalise",
    "parse_native",
    "with_defaults",
]

_PATH = re.compile(r" - at `(?P<path>[^`]*)`$")
_encoder = msgspec.json.Encoder()

# The stable problem `type` of each refusal reason (listed in docs/ingest.md).
PROBLEM_TYPES = {
    "invalid": "invalid-alert",
    "unauthenticated": "unauthenticated",
    "forbidden": "forbidden",
    "too_large": "body-too-large",
    "rate_limited": "rate-limited",
    "backlog": "backlog-full",
    "unavailable": "unavailable",
    "outcome_unknown": "outcome-unknown",
    "idempotency_key_reused": "idempotency-key-reused",
}


class AcceptedAlert(msgspec.Struct):
    """The id and fingerprint ingest assigned to one accepted alert."""

    id: str
    fingerprint: str


class AlertsAccepted(msgspec.Struct):
    """The 202 answer of `POST /v1/alerts`: one entry per alert, in request order."""

    accepted: list[AcceptedAlert]


def normalise(alert: AlertIn, path: str = "$") -> AlertIn:
    """Timestamps in UTC (the decoder has already refused those without an offset)."""
    try:
        if alert.starts_at is not None:
            alert.starts_at = alert.starts_at.astimezone(UTC)
        if alert.ends_at is not None:
            alert.ends_at = alert.ends_at.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:00:00-05:00 is valid RFC 3339 but past the last UTC moment.
        raise InvalidBodyError([FieldError(path, "a timestamp is out of range in UTC")]) from None
    return alert


def parse_native(body: bytes, max_batch: int) -> list[AlertIn]:
    """One alert or a batch of at most `max_batch`, strictly: unknown fields are refused."""
    alerts, _ = decode_alerts(body)
    if not alerts:
        raise InvalidBodyError([FieldError("$", "the batch is empty")])
    if len(alerts) > max_batch:
        raise InvalidBodyError([FieldError("$", f"at most {max_batch} alerts per request")])
    if len(alerts) == 1:
        return [normalise(alerts[0])]
    return [normalise(alert, f"$[{index}]") for index, alert in enumerate(alerts)]


def checked_alert(fields: Mapping[str, Any], path: str) -> AlertIn:
    """Build an `AlertIn` from mapped fields, enforcing every bound of the native model."""
    try:
        alert = msgspec.convert(dict(fields), AlertIn)
    except msgspec.ValidationError as exc:
        raise InvalidBodyError([field_error(str(exc), path)]) from None
    return normalise(alert, path)


def with_defaults(alert: AlertIn, defaults: Mapping[str, str]) -> AlertIn:
    """Add a producer's default labels the alert does not set, within the label bound."""
    if not defaults:
        return alert
    labels = dict(alert.labels)
    for key, value in defaults.items():
        if len(labels) >= MAX_LABELS:
            break
        labels.setdefault(key, value)
    alert.labels = labels
    return alert


def field_error(message: str, root: str = "$") -> FieldError:
    """A msgspec validation message as a field error, its `$` path re-rooted at `root`."""
    match = _PATH.search(message)
    if match is None:
        return FieldError(path=root, reason=message)
    return FieldError(path=root + match["path"][1:], reason=message[: match.start()])


def go_time(value: datetime | None) -> datetime | None:
    """Go's zero time (`0001-01-01T00:00:00Z`) means "not set"."""
    if value is None or value.year <= 1:
        return None
    return value


def alerts_work(
    alerts: list[AlertIn],
    producer: Producer,
    path: Path,
    status: int,
    *,
    empty_answer: bool = False,
) -> Work:
    """Alerts as the one `process_alerts` message they become, answered with their ids.

    Each gets a new id, its fingerprint and the producer's default labels;
    `empty_answer` answers with no body at all (Alertmanager's push).
    """
    received_at = time.time()
    queued = [
        QueuedAlert(
            id=new_alert_id(fp),  # the id carries its fingerprint's hash tag
            fingerprint=fp,
            received_at=received_at,
            producer=producer.name,
            alert=with_defaults(alert, producer.labels),
            path=path,
        )
        for alert in alerts
        for fp in (fingerprint(alert),)
    ]
    if empty_answer:
        return Work(PROCESS_ALERTS_ACTOR, (queued,), len(queued), b"", status, None)
    accepted = AlertsAccepted([AcceptedAlert(q.id, q.fingerprint) for q in queued])
    return Work(PROCESS_ALERTS_ACTOR, (queued,), len(queued), _encoder.encode(accepted), status)


class NativeFormat(Format):
    """`POST /v1/alerts`: one alert or a batch in Tocsin's format, refused in problem+json."""

    name = "native"
    invalid_status = 422

    def parse(self, body: bytes, producer: Producer) -> Work:
        return alerts_work(parse_native(body, self.max_batch), producer, "native", 202)

    def refusal_answer(self, refusal: Refusal) -> Response:
        return problem(
            refusal.status,
            PROBLEM_TYPES[refusal.reason],
            refusal.title,
            refusal.detail,
            refusal.errors,
            refusal.headers(),
        )
