"""Alertmanager's formats: the webhook notification (version 4) and the v2 alert push.

Alertmanager and Prometheus send more than Tocsin reads, so these models accept
unknown fields (unlike Tocsin's own format). The mapping: `alertname` label ->
name, `severity` label -> severity (unknown values -> warning), `summary` (or
`description`) annotation -> summary, `service` (or `job`) label -> service;
`source` names the path (`alertmanager` for the webhook, `prometheus` for a push).

Identity is the label set's fingerprint on both paths (`tocsin.common.models.fingerprint`,
the hash Alertmanager itself sends as `fingerprint`), so one alert pushed directly
and relayed by Alertmanager is one Tocsin alert.

`WebhookFormat` (`POST /v1/integrations/alertmanager`) and `PushFormat`
(`POST /api/v2/alerts`) refuse in Alertmanager's own error shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from starlette.responses import Response

from tocsin.common.models import AlertIn, FieldError, InvalidBodyError, Severity
from tocsin.ingest.formats import Format, Refusal, Work
from tocsin.ingest.native import alerts_work, checked_alert, field_error, go_time
from tocsin.ingest.producers import Producer

__all__ = [
    "PUSH_SOURCE",
    "WEBHOOK_SOURCE",
    "AlertmanagerError",
    "PostableAlert",
    "PushFormat",
    "WebhookAlert",
    "WebhookFormat",
    "WebhookMessage",
    "parse_postable_alerts",
    "parse_webhook",
    "refusal_answer",
    "severity_of",
]

_SEVERITIES: dict[str, Severity] = {
    "critical": "critical",
    "page": "critical",
    "fatal": "critical",
    "error": "error",
    "major": "error",
    "high": "error",
    "warning": "warning",
    "warn": "warning",
    "minor": "warning",
    "info": "info",
    "informational": "info",
    "none": "info",
    "low": "info",
}
_NO_NAME = "unnamed"
# `source` of an alert by the path it came in by.
WEBHOOK_SOURCE = "alertmanager"
PUSH_SOURCE = "prometheus"
# Bounds against absurd bodies; per-field bounds are the native model's.
_StrMap = Annotated[dict[str, str], msgspec.Meta(max_length=1024)]


class WebhookAlert(msgspec.Struct, kw_only=True):
    """One alert of an Alertmanager webhook notification."""

    status: Literal["firing", "resolved"]
    labels: _StrMap
    annotations: _StrMap = msgspec.field(default_factory=dict)
    starts_at: datetime | None = msgspec.field(default=None, name="startsAt")
    ends_at: datetime | None = msgspec.field(default=None, name="endsAt")
    generator_url: str = msgspec.field(default="", name="generatorURL")
    fingerprint: str = ""


class WebhookMessage(msgspec.Struct, kw_only=True):
    """The body Alertmanager's webhook receiver posts (version 4)."""

    version: str = "4"
    group_key: str = msgspec.field(default="", name="groupKey")
    truncated_alerts: int = msgspec.field(default=0, name="truncatedAlerts")
    status: Literal["firing", "resolved"] = "firing"
    receiver: str = ""
    group_labels: _StrMap = msgspec.field(default_factory=dict, name="groupLabels")
    common_labels: _StrMap = msgspec.field(default_factory=dict, name="commonLabels")
    common_annotations: _StrMap = msgspec.field(default_factory=dict, name="commonAnnotations")
    external_url: str = msgspec.field(default="", name="externalURL")
    alerts: list[WebhookAlert]


class PostableAlert(msgspec.Struct, kw_only=True):
    """One alert of Alertmanager's `POST /api/v2/alerts` body, as Prometheus sends it."""

    labels: _StrMap
    annotations: _StrMap = msgspec.field(default_factory=dict)
    starts_at: datetime | None = msgspec.field(default=None, name="startsAt")
    ends_at: datetime | None = msgspec.field(default=None, name="endsAt")
    generator_url: str = msgspec.field(default="", name="generatorURL")


class AlertmanagerError(msgspec.Struct):
    """An error as Alertmanager's API answers it."""

    code: int
    message: str


_encoder = msgspec.json.Encoder()
_webhook_decoder = msgspec.json.Decoder(WebhookMessage)
_postable_decoder = msgspec.json.Decoder(list[PostableAlert])


def severity_of(labels: Mapping[str, str]) -> Severity:
    return _SEVERITIES.get(labels.get("severity", "").strip().lower(), "warning")


def _common_fields(item: WebhookAlert | PostableAlert, source: str) -> dict[str, Any]:
    labels, annotations = item.labels, item.annotations
    summary = annotations.get("summary") or annotations.get("description") or ""
    fields: dict[str, Any] = {
        "name": labels.get("alertname") or _NO_NAME,
        "severity": severity_of(labels),
        "source": source,
        "service": labels.get("service") or labels.get("job") or "",
        "summary": summary[:1024],
        "labels": dict(labels),
        "annotations": dict(annotations),
        "starts_at": go_time(item.starts_at),
        "ends_at": go_time(item.ends_at),
    }
    if item.generator_url:
        fields["generator_url"] = item.generator_url
    return fields


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidBodyError([field_error(str(exc))]) from None
    except msgspec.DecodeError as exc:
        raise InvalidBodyError([FieldError("$", f"malformed JSON: {exc}")]) from None


def _batch_bound(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise InvalidBodyError([FieldError("$", f"at most {max_batch} alerts per request")])


def parse_webhook(body: bytes, max_batch: int) -> list[AlertIn]:
    """Map a webhook notification to alerts.

    Alertmanager's `fingerprint` is not trusted as the identity: the label set is
    hashed the same way here, so a hand-written body cannot split one alert in two.
    """
    message: WebhookMessage = _decode(_webhook_decoder, body)
    _batch_bound(len(message.alerts), max_batch)
    alerts = []
    for index, item in enumerate(message.alerts):
        fields = _common_fields(item, WEBHOOK_SOURCE)
        fields["status"] = item.status
        alerts.append(checked_alert(fields, f"$.alerts[{index}]"))
    return alerts


def parse_postable_alerts(
    body: bytes, max_batch: int, now: datetime | None = None
) -> list[AlertIn]:
    """Map a v2 alert push; as in Alertmanager, an alert whose end has passed is resolved."""
    items: list[PostableAlert] = _decode(_postable_decoder, body)
    _batch_bound(len(items), max_batch)
    moment = now or datetime.now(UTC)
    alerts = []
    for index, item in enumerate(items):
        if not item.labels.get("alertname"):
            raise InvalidBodyError(
                [FieldError(f"$[{index}].labels.alertname", "the alertname label is required")]
            )
        fields = _common_fields(item, PUSH_SOURCE)
        ends_at = fields["ends_at"]
        ended = ends_at is not None and ends_at.tzinfo is not None and ends_at <= moment
        fields["status"] = "resolved" if ended else "firing"
        alerts.append(checked_alert(fields, f"$[{index}]"))
    return alerts


def refusal_answer(refusal: Refusal) -> Response:
    """A refusal as Alertmanager's API answers errors: `{"code", "message"}`."""
    message = refusal.detail or refusal.title
    if refusal.errors:
        message = "; ".join(f"{e.path}: {e.reason}" for e in refusal.errors)
    body = AlertmanagerError(code=refusal.status, message=message)
    return Response(_encoder.encode(body), refusal.status, refusal.headers(), "application/json")


class _AlertmanagerFormat(Format):
    """What both of Alertmanager's formats share: its error shape."""

    def refusal_answer(self, refusal: Refusal) -> Response:
        return refusal_answer(refusal)


class WebhookFormat(_AlertmanagerFormat):
    """`POST /v1/integrations/alertmanager`: Alertmanager's webhook notification."""

    name = "alertmanager"

    def parse(self, body: bytes, producer: Producer) -> Work:
        return alerts_work(parse_webhook(body, self.max_batch), producer, "alertmanager", 200)


class PushFormat(_AlertmanagerFormat):
    """`POST /api/v2/alerts`: alerts pushed as Prometheus pushes them, answered with no body."""

    name = "prometheus"

    def parse(self, body: bytes, producer: Producer) -> Work:
        alerts = parse_postable_alerts(body, self.max_batch)
        return alerts_work(alerts, producer, "prometheus", 200, empty_answer=True)
