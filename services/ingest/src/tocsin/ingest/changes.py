"""PagerDuty change events (`POST /v2/change/enqueue`): context on the stream, never a page.

A change event says something changed (a deploy, a config push); PagerDuty
shows it beside incidents and never pages for it. Tocsin does the same: the
event is no alert and goes through no lifecycle, queue or notification. Ingest
authenticates the routing key as for `/v2/enqueue`, validates the event and
publishes a `change.received` event on the `changes` channel, whose capped
stream is the change timeline: live subscribers get it at once and late ones
replay it from their offset, like any channel.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from tocsin.common.errors import StoreError
from tocsin.common.events import EventPublisher
from tocsin.common.httplimits import BodyTooLargeError, ClientGoneError, read_body
from tocsin.common.redis import store_error, sync_client
from tocsin.ingest.pagerduty_errors import INVALID_ROUTING_KEY, routing_key_errors
from tocsin.ingest.producers import AuthError, ProducerAuth

__all__ = [
    "CHANGES_CHANNEL",
    "ChangeAccepted",
    "ChangeEndpoint",
    "ChangeEvent",
    "change_record",
]

CHANGES_CHANNEL = "changes"
_DETAILS_MAX_BYTES = 8192


class ChangePayload(msgspec.Struct, kw_only=True):
    """The `payload` of a change event."""

    summary: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    source: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    custom_details: Any = None


class ChangeLink(msgspec.Struct, kw_only=True):
    """A link attached to a change event."""

    href: Annotated[str, msgspec.Meta(max_length=2048)]
    text: Annotated[str, msgspec.Meta(max_length=1024)] = ""


class ChangeEvent(msgspec.Struct, kw_only=True):
    """A PagerDuty change event."""

    routing_key: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    payload: ChangePayload
    links: Annotated[list[ChangeLink], msgspec.Meta(max_length=32)] = msgspec.field(
        default_factory=list
    )


class ChangeAccepted(msgspec.Struct):
    """PagerDuty's 202 answer to a change event."""

    status: str
    message: str


_decoder = msgspec.json.Decoder(ChangeEvent)
_encoder = msgspec.json.Encoder()


def change_record(event: ChangeEvent, producer: str, received_at: float) -> dict[str, Any]:
    """The `change` object published for `event`."""
    payload = event.payload
    details = None
    if payload.custom_details is not None:
        encoded = json.dumps(payload.custom_details, default=str)
        details = (
            payload.custom_details
            if len(encoded) <= _DETAILS_MAX_BYTES
            else encoded[:_DETAILS_MAX_BYTES]
        )
    return {
        "id": uuid.uuid4().hex,
        "summary": payload.summary,
        "source": payload.source or "",
        "timestamp": payload.timestamp.isoformat() if payload.timestamp else None,
        "custom_details": details,
        "links": [{"href": link.href, "text": link.text} for link in event.links],
        "producer": producer,
        "received_at": received_at,
    }


def _answer(status: int, body: dict[str, Any]) -> tuple[int, bytes]:
    return status, _encoder.encode(body)


def _refused(status: int, state: str, message: str, errors: list[str]) -> tuple[int, bytes]:
    return _answer(status, {"status": state, "message": message, "errors": errors})


class ChangeEndpoint:
    """The ASGI app of `POST /v2/change/enqueue`, answering in PagerDuty's shapes."""

    def __init__(self, auth: ProducerAuth, redis_url: str, body_limit: int) -> None:
        self._auth = auth
        self._redis_url = redis_url
        self._body_limit = body_limit
        self._publisher: EventPublisher | None = None

    def _publish(self, data: str) -> None:
        if self._publisher is None:  # a sync client, on first use: change events are rare
            self._publisher = EventPublisher(sync_client(self._redis_url))
        try:
            self._publisher.publish([CHANGES_CHANNEL], data)
        except (RedisError, OSError) as exc:
            raise store_error(exc) from exc

    async def _handle(self, receive: Receive, declared: str | None) -> tuple[int, bytes]:
        try:
            body = await read_body(receive, self._body_limit, declared)
        except BodyTooLargeError:
            return _refused(413, "invalid event", "Event object is invalid",
                            [f"the body is over {self._body_limit} bytes"])  # fmt: skip
        try:
            event = _decoder.decode(body)
        except msgspec.DecodeError as exc:
            return _refused(400, "invalid event", "Event object is invalid", [str(exc)])
        try:
            producer = await self._auth.authenticate(event.routing_key)
        except AuthError as exc:
            errors = routing_key_errors(f"{exc.code}: {exc}")
            return _refused(exc.status, "unauthorized", INVALID_ROUTING_KEY, errors)
        except StoreError:
            return _refused(503, "unavailable", "Service unavailable",
                            ["credentials cannot be checked now; retry"])  # fmt: skip
        change = change_record(event, producer.name, time.time())
        try:
            await asyncio.to_thread(
                self._publish, json.dumps({"type": "change.received", "change": change})
            )
        except StoreError:
            return _refused(503, "unavailable", "Service unavailable",
                            ["the change stream is unreachable; retry"])  # fmt: skip
        return 202, _encoder.encode(ChangeAccepted("success", "Change event processed"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            status, body = _refused(405, "invalid event", "Method not allowed", ["use POST"])
        else:
            declared = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"),
                None,
            )
            try:
                status, body = await self._handle(receive, declared)
            except ClientGoneError:
                return
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
