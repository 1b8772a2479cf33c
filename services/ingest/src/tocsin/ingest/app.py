"""The ingest HTTP app: producer endpoints, thin over parsing, auth and admission.

Every endpoint runs the same steps -- authenticate, read the bounded body,
parse into alerts (or an action), admit one queue message -- and differs only
in how it parses and in the dialect it answers refusals in: problem+json for
Tocsin's format, Alertmanager's and PagerDuty's own shapes for theirs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tocsin.common import broker as queues
from tocsin.common.auth import TokenVerifier
from tocsin.common.models import (
    AlertIn,
    FieldError,
    InvalidBodyError,
    Path,
    QueuedAlert,
    fingerprint,
)
from tocsin.common.models import new_alert_id as new_id
from tocsin.common.ops import ops_routes
from tocsin.common.pipelining import OutcomeUnknownError, PipelinedRedis, RedisReplyError
from tocsin.common.problems import problem
from tocsin.common.telemetry import current_traceparent, producer_span, tracing_enabled
from tocsin.ingest import alertmanager, pagerduty
from tocsin.ingest.admission import Admission, Outcome, encode_message
from tocsin.ingest.changes import ChangeEndpoint
from tocsin.ingest.credentials import credential_of
from tocsin.ingest.metrics import ALERTS_RECEIVED, REQUEST_DURATION, REQUESTS_REJECTED
from tocsin.ingest.native import AcceptedAlert, AlertsAccepted, parse_native, with_defaults
from tocsin.ingest.openapi import openapi_document
from tocsin.ingest.pagerduty_errors import INVALID_ROUTING_KEY, routing_key_errors
from tocsin.ingest.producers import AuthError, Producer, ProducerAuth
from tocsin.ingest.settings import IngestSettings
from tocsin.ingest.tracecontext import continue_trace

__all__ = [
    "PROBLEM_TYPES",
    "BodyTooLargeError",
    "ClientGoneError",
    "IngestApp",
    "ProducerEndpoint",
    "ProducerHeaders",
    "ProducerPosts",
    "Refusal",
    "build_app",
    "producer_headers",
    "read_body",
]

_encoder = msgspec.json.Encoder()
_MAX_IDEMPOTENCY_KEY = 255


class BodyTooLargeError(Exception):
    """The request body is over the configured limit."""


class ClientGoneError(Exception):
    """The client disconnected before its body was read."""


async def read_body(receive: Receive, limit: int, declared: str | None = None) -> bytes:
    """Read the body from ASGI `receive`, refusing it as soon as it passes `limit` bytes.

    A declared Content-Length over the limit is refused before any of the body is read.
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused, independent of the dialect that will say it."""

    status: int
    reason: str  # the metrics label and, for problem+json, the type slug
    title: str
    detail: str = ""
    errors: list[FieldError] = field(default_factory=list)
    retry_after: int = 0

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)} if self.retry_after else None


@dataclass(frozen=True)
class Work:
    """A parsed request: the one queue message it becomes and the answer it gets."""

    actor: str
    args: tuple[Any, ...]
    alerts: int
    answer: bytes
    status: int
    media_type: str | None = "application/json"


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


def _problem_answer(refusal: Refusal) -> Response:
    return problem(
        refusal.status,
        PROBLEM_TYPES[refusal.reason],
        refusal.title,
        refusal.detail,
        refusal.errors,
        refusal.headers(),
    )


def _request_digest(fmt: Format, body: bytes) -> bytes:
    """What an Idempotency-Key is bound to: the endpoint (its format) and the body."""
    return hashlib.sha256(fmt.name.encode() + b"\n" + body).hexdigest().encode()


def _invalid_utf8(exc: UnicodeDecodeError) -> Refusal:
    return Refusal(400, "invalid", "Invalid request", f"the body is not valid UTF-8: {exc}")


def _alertmanager_answer(refusal: Refusal) -> Response:
    message = refusal.detail or refusal.title
    if refusal.errors:
        message = "; ".join(f"{e.path}: {e.reason}" for e in refusal.errors)
    body = alertmanager.AlertmanagerError(code=refusal.status, message=message)
    return Response(_encoder.encode(body), refusal.status, refusal.headers(), "application/json")


_PAGERDUTY_STATUS = {400: "invalid event", 401: "unauthorized", 403: "forbidden",
                     413: "invalid event", 429: "throttle event", 503: "unavailable",
                     504: "outcome unknown"}  # fmt: skip


def _pagerduty_answer(refusal: Refusal) -> Response:
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
    body = pagerduty.EventRefused(
        status=_PAGERDUTY_STATUS.get(refusal.status, "error"), message=message, errors=errors
    )
    return Response(_encoder.encode(body), refusal.status, refusal.headers(), "application/json")


@dataclass(frozen=True)
class Format:
    """A producer format: its metrics name, body limit and refusal dialect."""

    name: str
    body_limit: int
    invalid_status: int
    answer_refusal: Callable[[Refusal], Response]


Parse = Callable[[bytes, Producer, str], Work]
Accept = Callable[[Scope, Receive], Awaitable[tuple[Work, str, bool]]]


class ProducerEndpoint:
    """One producer endpoint as a plain ASGI app.

    It answers from the ASGI scope directly, without Starlette's Request and
    Response objects: this is the path every alert takes, so it stays short.
    """

    def __init__(self, fmt: Format, accept: Accept) -> None:
        self._format = fmt
        self._accept = accept
        self._duration = REQUEST_DURATION.labels(fmt.name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        fmt = self._format
        try:
            if tracing_enabled():
                # The request's enqueue, as Dramatiq's tracing middleware would record it.
                with producer_span(queues.ALERTS_QUEUE):
                    work, traceparent, replayed = await self._accept(scope, receive)
            else:
                work, traceparent, replayed = await self._accept(scope, receive)
        except RefusedError as refused:
            REQUESTS_REJECTED.labels(fmt.name, refused.refusal.reason).inc()
            await fmt.answer_refusal(refused.refusal)(scope, receive, send)
        else:
            headers = [
                (b"content-length", b"%d" % len(work.answer)),
                (b"traceparent", traceparent.encode()),
            ]
            if work.media_type:
                headers.append((b"content-type", work.media_type.encode()))
            if replayed:
                headers.append((b"idempotent-replayed", b"true"))
            await send({"type": "http.response.start", "status": work.status, "headers": headers})
            await send({"type": "http.response.body", "body": work.answer})
        self._duration.observe(time.perf_counter() - started)


@dataclass
class ProducerHeaders:
    """The request headers ingest reads, picked in one pass over the raw headers."""

    authorization: str = ""
    content_length: str | None = None
    idempotency_key: str = ""
    traceparent: str | None = None

    @property
    def bearer(self) -> str:
        return credential_of(self.authorization)


# ASGI servers deliver header names lower-cased.
_WANTED_HEADERS = {
    b"authorization": "authorization",
    b"content-length": "content_length",
    b"idempotency-key": "idempotency_key",
    b"traceparent": "traceparent",
}


def producer_headers(raw: list[tuple[bytes, bytes]]) -> ProducerHeaders:
    headers = ProducerHeaders()
    for name, value in raw:
        field_name = _WANTED_HEADERS.get(name)
        if field_name is not None:
            setattr(headers, field_name, value.decode("latin-1"))
    return headers


def _queued(
    alerts: list[AlertIn], producer: Producer, received_at: float, path: Path = "native"
) -> list[QueuedAlert]:
    return [
        QueuedAlert(
            id=new_id(fp),  # the id carries its fingerprint's hash tag
            fingerprint=fp,
            received_at=received_at,
            producer=producer.name,
            alert=with_defaults(alert, producer.labels),
            path=path,
        )
        for alert in alerts
        for fp in (fingerprint(alert),)
    ]


def _alerts_work(queued: list[QueuedAlert], status: int, empty_answer: bool = False) -> Work:
    accepted = AlertsAccepted([AcceptedAlert(q.id, q.fingerprint) for q in queued])
    return Work(
        actor=queues.PROCESS_ALERTS_ACTOR,
        args=(queued,),
        alerts=len(queued),
        answer=b"" if empty_answer else _encoder.encode(accepted),
        status=status,
        media_type=None if empty_answer else "application/json",
    )


def build_app(
    settings: IngestSettings,
    redis: Redis,
    verifier: TokenVerifier | None = None,
    queue_connection: PipelinedRedis | None = None,
) -> Starlette:
    """The ingest app over `redis` (an asyncio client); `verifier` checks producer JWTs.

    Admission goes over `queue_connection` (default: a pipelined connection to
    `settings.redis_url`), the rest (API keys, readiness) over `redis`.
    """
    auth = ProducerAuth(
        redis, verifier, required=settings.require_auth, cache_seconds=settings.auth_cache_seconds
    )
    queue = queue_connection or PipelinedRedis(settings.redis_url)
    admission = Admission(
        queue,
        queues.ALERTS_QUEUE,
        rate_per_second=settings.rate_per_second,
        burst=settings.rate_burst,
        max_backlog=settings.max_backlog,
        idempotency_ttl=settings.idempotency_ttl_seconds,
    )
    # The counter's child per (format, producer), kept here rather than looked up
    # through `labels()` (which validates and locks) on every request.
    alerts_received: dict[tuple[str, str], Counter] = {}
    native = Format("native", settings.max_body_bytes, 422, _problem_answer)
    webhook = Format("alertmanager", settings.max_body_bytes, 400, _alertmanager_answer)
    prometheus = Format("prometheus", settings.max_body_bytes, 400, _alertmanager_answer)
    pager = Format("pagerduty", settings.pagerduty_max_body_bytes, 400, _pagerduty_answer)

    def accepting(
        fmt: Format, parse: Parse, credential_in_body: Callable[[bytes], str] | None = None
    ) -> ProducerEndpoint:
        async def accept(scope: Scope, receive: Receive) -> tuple[Work, str, bool]:
            return await _accept(scope, receive, fmt, parse, credential_in_body)

        return ProducerEndpoint(fmt, accept)

    async def _accept(
        scope: Scope,
        receive: Receive,
        fmt: Format,
        parse: Parse,
        credential_in_body: Callable[[bytes], str] | None,
    ) -> tuple[Work, str, bool]:
        """The work a request becomes, its traceparent, and whether it was a replay."""
        headers = producer_headers(scope["headers"])
        idempotency_key = headers.idempotency_key
        if len(idempotency_key) > _MAX_IDEMPOTENCY_KEY:
            raise RefusedError(
                Refusal(
                    fmt.invalid_status,
                    "invalid",
                    "Invalid request",
                    f"Idempotency-Key is over {_MAX_IDEMPOTENCY_KEY} characters",
                )
            )
        credential = headers.bearer
        producer: Producer | None = None
        # Authenticate before reading the body, unless the credential is inside it.
        if credential or credential_in_body is None:
            producer = await _authenticate(credential)
        body = await _read(receive, fmt, headers.content_length)
        if producer is None:
            assert credential_in_body is not None
            producer = await _authenticate(credential_in_body(body))
        # With tracing on, the message continues the request's PRODUCER span.
        traceparent = current_traceparent() or continue_trace(headers.traceparent)
        try:
            work = parse(body, producer, traceparent)
        except InvalidBodyError as exc:
            raise RefusedError(
                Refusal(fmt.invalid_status, "invalid", "Invalid request", str(exc), exc.errors)
            ) from None
        except UnicodeDecodeError as exc:
            # msgspec reports invalid UTF-8 inside a JSON string this way, not as DecodeError.
            raise RefusedError(_invalid_utf8(exc)) from None
        if work.actor == queues.PROCESS_ALERTS_ACTOR and not work.alerts:
            # An empty Alertmanager notification or push: nothing to queue, as Alertmanager.
            return work, traceparent, False
        message_id, message = encode_message(
            queues.ALERTS_QUEUE, work.actor, work.args, {"traceparent": traceparent}
        )
        try:
            verdict = await admission.admit(
                producer.name,
                message_id,
                message,
                cost=max(1, work.alerts),
                answer=work.answer,
                idempotency_key=idempotency_key,
                request_digest=_request_digest(fmt, body) if idempotency_key else b"",
            )
        except OutcomeUnknownError as exc:
            # Sent, then no answer: Redis may have enqueued it. Not a refusal (503):
            # a retry with the same Idempotency-Key is safe, one without may count twice.
            raise RefusedError(
                Refusal(
                    504,
                    "outcome_unknown",
                    "Outcome unknown",
                    f"the queue did not answer after the request was sent ({exc}): it may "
                    "have been accepted; retry with the same Idempotency-Key to be safe",
                    retry_after=1,
                )
            ) from None
        except (RedisError, RedisReplyError, OSError) as exc:
            raise RefusedError(
                Refusal(
                    503,
                    "unavailable",
                    "Service unavailable",
                    f"the queue is unreachable, nothing was enqueued: {exc}",
                    retry_after=1,
                )
            ) from None
        if verdict.outcome is Outcome.RATE_LIMITED:
            raise RefusedError(
                Refusal(
                    429,
                    "rate_limited",
                    "Too many requests",
                    f"the rate limit of producer {producer.name!r} is spent",
                    retry_after=verdict.retry_after,
                )
            )
        if verdict.outcome is Outcome.BACKLOGGED:
            raise RefusedError(
                Refusal(
                    503,
                    "backlog",
                    "Backlog full",
                    "the alerts queue is over its bound; retry later",
                    retry_after=settings.backlog_retry_after,
                )
            )
        if verdict.outcome is Outcome.KEY_REUSED:
            raise RefusedError(
                Refusal(
                    422,
                    "idempotency_key_reused",
                    "Idempotency-Key reused",
                    "this Idempotency-Key was first sent with another request (endpoint or "
                    "body); use a new key for a new request",
                )
            )
        if verdict.outcome is Outcome.REPLAYED:
            return dataclasses.replace(work, answer=verdict.replay), traceparent, True
        if work.alerts:
            received = alerts_received.get((fmt.name, producer.name))
            if received is None:
                received = ALERTS_RECEIVED.labels(fmt.name, producer.name)
                alerts_received[fmt.name, producer.name] = received
            received.inc(work.alerts)
        return work, traceparent, False

    async def _authenticate(credential: str) -> Producer:
        try:
            return await auth.authenticate(credential)
        except AuthError as exc:
            reason = "forbidden" if exc.status == 403 else "unauthenticated"
            title = "Forbidden" if exc.status == 403 else "Unauthorized"
            raise RefusedError(Refusal(exc.status, reason, title, f"{exc.code}: {exc}")) from None
        except (RedisError, OSError) as exc:
            raise RefusedError(
                Refusal(
                    503,
                    "unavailable",
                    "Service unavailable",
                    f"credentials cannot be checked: {exc}",
                    retry_after=1,
                )
            ) from None

    async def _read(receive: Receive, fmt: Format, declared: str | None) -> bytes:
        try:
            return await read_body(receive, fmt.body_limit, declared)
        except BodyTooLargeError:
            raise RefusedError(
                Refusal(
                    413,
                    "too_large",
                    "Request body too large",
                    f"the body is over {fmt.body_limit} bytes",
                )
            ) from None
        except ClientGoneError:
            raise RefusedError(Refusal(400, "invalid", "Client disconnected")) from None

    def parse_native_request(body: bytes, producer: Producer, traceparent: str) -> Work:
        alerts = parse_native(body, settings.max_batch)
        return _alerts_work(_queued(alerts, producer, time.time()), 202)

    def parse_webhook_request(body: bytes, producer: Producer, traceparent: str) -> Work:
        alerts = alertmanager.parse_webhook(body, settings.max_batch)
        return _alerts_work(_queued(alerts, producer, time.time(), "alertmanager"), 200)

    def parse_push_request(body: bytes, producer: Producer, traceparent: str) -> Work:
        alerts = alertmanager.parse_postable_alerts(body, settings.max_batch)
        queued = _queued(alerts, producer, time.time(), "prometheus")
        return _alerts_work(queued, 200, empty_answer=True)

    def parse_event_request(body: bytes, producer: Producer, traceparent: str) -> Work:
        event = pagerduty.decode_event(body)
        intent = pagerduty.intent_of(event, producer=producer.name, at=time.time())
        answer = _encoder.encode(
            pagerduty.EventAccepted("success", "Event processed", intent.dedup_key)
        )
        if intent.action is not None:
            return Work(queues.APPLY_ACTION_ACTOR, (intent.action,), 0, answer, 202)
        assert intent.alert is not None
        work = _alerts_work(_queued([intent.alert], producer, time.time(), "pagerduty"), 202)
        return Work(work.actor, work.args, work.alerts, answer, 202)

    def routing_key(body: bytes) -> str:
        try:
            return pagerduty.decode_event(body).routing_key
        except InvalidBodyError as exc:
            raise RefusedError(
                Refusal(400, "invalid", "Invalid request", str(exc), exc.errors)
            ) from None
        except UnicodeDecodeError as exc:
            raise RefusedError(_invalid_utf8(exc)) from None

    document = _encoder.encode(openapi_document())

    async def get_openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def ready() -> tuple[bool, dict[str, str]]:
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            return False, {"redis": f"unreachable: {exc}"}
        return True, {"redis": "ok"}

    producer_endpoints = {
        "/v1/alerts": accepting(native, parse_native_request),
        "/v1/integrations/alertmanager": accepting(webhook, parse_webhook_request),
        "/api/v2/alerts": accepting(prometheus, parse_push_request),
        "/v2/enqueue": accepting(pager, parse_event_request, routing_key),
    }
    producer_routes = [
        Route(path, endpoint, methods=["POST"]) for path, endpoint in producer_endpoints.items()
    ]
    routes: list[Route] = [
        *producer_routes,
        Route("/v2/change/enqueue", ChangeEndpoint(auth, settings.redis_url, pager.body_limit)),
        Route("/openapi.json", get_openapi, methods=["GET"]),
        *ops_routes(ready, metrics=not settings.metrics_port),
    ]
    # The routes above still answer other methods (405); POSTs take the short way.
    middleware = [Middleware(ProducerPosts, routes=producer_routes)]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await queue.close()
        await redis.aclose()

    return IngestApp(producer_routes, routes=routes, middleware=middleware, lifespan=lifespan)


class IngestApp(Starlette):
    """The ingest Starlette app, where a producer POST skips the middleware stack.

    With tracing off, nothing in the stack acts on a producer POST but
    `ProducerPosts`, so the app hands it to the endpoint itself and spares
    every alert the layers in between (whose own wrapping of `send` costs a
    coroutine per message). An error escaping the endpoint then reaches the
    server, which answers 500 as Starlette's error middleware would. With
    tracing on, every request takes the full stack so its server span is kept.
    """

    def __init__(self, producer_routes: list[Route], **options: Any) -> None:
        super().__init__(**options)
        self._producer_routes = {route.path: route for route in producer_routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not tracing_enabled():
            route = self._producer_routes.get(scope["path"])
            if route is not None:
                scope["app"] = self
                scope["route"] = route
                await route.endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class ProducerPosts:
    """ASGI middleware: a POST to a producer path goes straight to its endpoint.

    Every alert takes this path, so it skips the router and the exception
    middleware; anything else passes through to the app.
    """

    def __init__(self, app: ASGIApp, routes: list[Route]) -> None:
        self.app = app
        self._routes = {route.path: route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self._routes.get(scope["path"])
            if route is not None:
                scope["route"] = route  # as the router would: tracing names spans by it
                await route.endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RefusedError(Exception):
    """Raised inside a handler to end it with a refusal."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.title)
        self.refusal = refusal
