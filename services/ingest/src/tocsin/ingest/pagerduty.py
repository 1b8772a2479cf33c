"""PagerDuty Events API v2 (`POST /v2/enqueue`): events in, alerts or actions out.

`trigger` becomes a firing alert and `resolve` a resolved one, both keyed by the
event's `dedup_key` (generated on a trigger without one); `acknowledge` becomes
an `AlertAction` on the alert with that fingerprint. The routing key is the
producer's API key. Answers keep PagerDuty's shapes so its clients work as is
(`EventsFormat`, refusals included).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from starlette.responses import Response

from tocsin.common.broker import APPLY_ACTION_ACTOR
from tocsin.common.models import (
    MAX_LABELS,
    AlertAction,
    AlertIn,
    FieldError,
    InvalidBodyError,
    Severity,
)
from tocsin.ingest.formats import Format, Refusal, Work
from tocsin.ingest.native import alerts_work, checked_alert, field_error
from tocsin.ingest.pagerduty_errors import INVALID_ROUTING_KEY, routing_key_errors
from tocsin.ingest.producers import Producer

__all__ = [
    "Event",
    "EventAccepted",
    "EventRefused",
    "EventsFormat",
    "Intent",
    "Link",
    "Payload",
    "decode_event",
    "intent_of",
    "parse_event",
    "refusal_answer",
]

_ANNOTATION_MAX = 8192


class Payload(msgspec.Struct, kw_only=True):
    """The `payload` of a trigger event."""

    summary: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    severity: Severity
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    component: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    group: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    event_class: Annotated[str, msgspec.Meta(max_length=255)] | None = msgspec.field(
        default=None, name="class"
    )
    custom_details: Any = None


class Link(msgspec.Struct, kw_only=True):
    """A link attached to an event."""

    href: str
    text: str = ""


class Image(msgspec.Struct, kw_only=True):
    """An image attached to an event."""

    src: str
    href: str = ""
    alt: str = ""


class Event(msgspec.Struct, kw_only=True):
    """A PagerDuty Events API v2 event."""

    routing_key: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    event_action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    payload: Payload | None = None
    links: list[Link] = msgspec.field(default_factory=list)
    images: list[Image] = msgspec.field(default_factory=list)
    client: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    client_url: Annotated[str, msgspec.Meta(max_length=2048)] | None = None


class EventAccepted(msgspec.Struct):
    """PagerDuty's 202 answer."""

    status: str
    message: str
    dedup_key: str


class EventRefused(msgspec.Struct):
    """PagerDuty's error answer (400 invalid event, 401, 413, 429)."""

    status: str
    message: str
    errors: list[str] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class Intent:
    """What an event asks for: an alert (trigger, resolve) or an action (acknowledge)."""

    dedup_key: str
    routing_key: str
    alert: AlertIn | None = None
    action: AlertAction | None = None


_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


def _refuse(path: str, reason: str) -> InvalidBodyError:
    return InvalidBodyError([FieldError(path, reason)])


def decode_event(body: bytes) -> Event:
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidBodyError([field_error(str(exc))]) from None
    except msgspec.DecodeError as exc:
        raise _refuse("$", f"malformed JSON: {exc}") from None


def _annotations(event: Event, payload: Payload | None) -> dict[str, str]:
    annotations: dict[str, str] = {}
    details = payload.custom_details if payload else None
    if isinstance(details, dict) and len(details) < MAX_LABELS - 2:
        for key, value in details.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if not 1 <= len(key) <= 128 or len(text) > _ANNOTATION_MAX:
                annotations = {}
                break
            annotations[key] = text
    if details is not None and not annotations:
        annotations["custom_details"] = json.dumps(details, default=str)[:_ANNOTATION_MAX]
    if event.links:
        links = [{"href": link.href, "text": link.text} for link in event.links]
        annotations["links"] = json.dumps(links)[:_ANNOTATION_MAX]
    return annotations


def parse_event(body: bytes, *, producer: str, at: float) -> Intent:
    """Decode and map one event; refuses (`InvalidBodyError`) what PagerDuty would refuse."""
    return intent_of(decode_event(body), producer=producer, at=at)


def intent_of(event: Event, *, producer: str, at: float) -> Intent:
    """Map a decoded event to the alert or action it asks for."""
    payload = event.payload
    if event.event_action == "trigger" and payload is None:
        raise _refuse("$.payload", "a trigger event needs a payload")
    if event.event_action != "trigger" and not event.dedup_key:
        article = "an" if event.event_action[0] in "aeiou" else "a"
        raise _refuse("$.dedup_key", f"{article} {event.event_action} event needs a dedup_key")
    dedup_key = event.dedup_key or uuid.uuid4().hex
    if event.event_action == "acknowledge":
        action = AlertAction(
            id=uuid.uuid4().hex, action="acknowledge", fingerprint=dedup_key, by=producer, at=at
        )
        return Intent(dedup_key, event.routing_key, action=action)
    labels: dict[str, str] = {}
    fields: dict[str, Any] = {
        "status": "firing" if event.event_action == "trigger" else "resolved",
        "dedup_key": dedup_key,
        # A resolve may come without a payload; the processor matches it by dedup key.
        "name": (payload.summary if payload else dedup_key)[:256],
        "severity": payload.severity if payload else "info",
        "annotations": _annotations(event, payload),
        "labels": labels,
    }
    if payload is not None:
        fields["summary"] = payload.summary
        fields["source"] = payload.source[:256]
        fields["service"] = payload.group or payload.component or ""
        fields["starts_at"] = payload.timestamp
        for label, value in (("component", payload.component), ("group", payload.group),
                             ("class", payload.event_class)):  # fmt: skip
            if value:
                labels[label] = value
    if event.client_url:
        fields["generator_url"] = event.client_url
    return Intent(dedup_key, event.routing_key, alert=checked_alert(fields, "$"))


_STATUS = {400: "invalid event", 401: "unauthorized", 403: "forbidden", 413: "invalid event",
           429: "throttle event", 503: "unavailable", 504: "outcome unknown"}  # fmt: skip


def refusal_answer(refusal: Refusal) -> Response:
    """A refusal as PagerDuty's Events API answers: `{"status", "message", "errors"}`."""
    errors = [f"{e.path}: {e.reason}" for e in refusal.errors]
    if refusal.status == 400:
        message = "Event object is invalid"
    elif refusal.status in (401, 403):
        message, errors = INVALID_ROUTING_KEY, routing_key_errors(refusal.detail or "")
    elif refusal.status == 429:
        message = "Requests for this service are arriving too quickly.  Please retry later."
    else:
        message = refusal.title
    if refusal.detail and not errors:
        errors = [refusal.detail]
    body = EventRefused(status=_STATUS.get(refusal.status, "error"), message=message, errors=errors)
    return Response(_encoder.encode(body), refusal.status, refusal.headers(), "application/json")


class EventsFormat(Format):
    """`POST /v2/enqueue`: one Events API v2 event, its routing key the credential."""

    name = "pagerduty"
    credential_in_body = True

    def parse(self, body: bytes, producer: Producer) -> Work:
        intent = parse_event(body, producer=producer.name, at=time.time())
        answer = _encoder.encode(EventAccepted("success", "Event processed", intent.dedup_key))
        if intent.action is not None:
            return Work(APPLY_ACTION_ACTOR, (intent.action,), 0, answer, 202)
        assert intent.alert is not None
        work = alerts_work([intent.alert], producer, "pagerduty", 202)
        return Work(work.actor, work.args, work.alerts, answer, 202)

    def body_credential(self, body: bytes) -> str:
        return decode_event(body).routing_key

    def refusal_answer(self, refusal: Refusal) -> Response:
        return refusal_answer(refusal)
