"""The ingest HTTP app: producer endpoints, thin over `intake`."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from dramatiq.brokers.redis import RedisBroker
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from tocsin.common import broker as queues
from tocsin.common.models import (
    FieldError,
    InvalidBodyError,
    QueuedAlert,
    decode_alerts,
    fingerprint,
    new_alert_id,
)
from tocsin.common.ops import ops_routes
from tocsin.common.problems import problem
from tocsin.ingest.settings import IngestSettings

__all__ = ["BodyTooLargeError", "build_app", "read_body"]

_encoder = msgspec.json.Encoder()


class BodyTooLargeError(Exception):
    """The request body is over the configured limit."""


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(settings: IngestSettings, broker: RedisBroker) -> Starlette:
    async def post_alerts(request: Request) -> Response:
        received_at = time.time()
        try:
            body = await read_body(request, settings.max_body_bytes)
        except BodyTooLargeError:
            return problem(
                413,
                "body-too-large",
                "Request body too large",
                f"the body is over {settings.max_body_bytes} bytes",
            )
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            alerts, _ = decode_alerts(body)
        except InvalidBodyError as exc:
            return problem(422, "invalid-alert", "Invalid alert", str(exc), exc.errors)
        if not alerts:
            return problem(
                422, "invalid-alert", "Invalid alert", "empty batch", [FieldError("$", "empty")]
            )
        if len(alerts) > settings.max_batch:
            return problem(
                413,
                "batch-too-large",
                "Batch too large",
                f"at most {settings.max_batch} alerts per request",
            )
        queued = [
            QueuedAlert(
                id=new_alert_id(),
                fingerprint=fingerprint(alert),
                received_at=received_at,
                producer="anonymous",
                alert=alert,
            )
            for alert in alerts
        ]
        payload: list[Any] = msgspec.to_builtins(queued)
        # One message per request, not per alert: the processor works in batches.
        # The enqueue is a single local Redis round trip, cheaper inline than a
        # hop to a thread.
        broker.enqueue(
            queues.build_message(queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, (payload,))
        )
        accepted = [{"id": q.id, "fingerprint": q.fingerprint} for q in queued]
        return Response(
            _encoder.encode({"accepted": accepted}),
            status_code=202,
            media_type="application/json",
        )

    async def ready() -> tuple[bool, dict[str, str]]:
        try:
            broker.client.ping()
        except Exception as exc:
            return False, {"redis": f"unreachable: {exc}"}
        return True, {"redis": "ok"}

    routes = [Route("/v1/alerts", post_alerts, methods=["POST"]), *ops_routes(ready)]
    return Starlette(routes=routes)
