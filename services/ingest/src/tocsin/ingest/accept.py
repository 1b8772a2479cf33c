"""The accept pipeline: a producer request through authenticate -> read -> parse -> admit.

Every producer endpoint runs the same four steps and differs only in its
`Format` (how the body parses, how a refusal is worded). Each step is a method
of `AcceptPipeline` that returns its value or raises `RefusedError` carrying a
`Refusal` in no dialect; `ProducerEndpoint` answers the request with the
accepted work's answer or with the format's rendering of the refusal.

A 2xx leaves only after the admission script has put the message in Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter
from starlette.types import Receive, Scope, Send

from tocsin.common import broker as queues
from tocsin.common.errors import OutcomeUnknownError, RedisReplyError, StoreError
from tocsin.common.httplimits import BodyTooLargeError, ClientGoneError, read_body
from tocsin.common.models import InvalidBodyError
from tocsin.common.telemetry import current_traceparent, producer_span, tracing_enabled
from tocsin.common.telemetry.asgi import (
    end_server_span,
    server_span_answered,
    server_span_failed,
    start_server_span,
)
from tocsin.common.telemetry.propagation import start_producer_span
from tocsin.ingest.admission import (
    Admission,
    Outcome,
    Verdict,
    encode_message,
    needs_script,
    verdict,
)
from tocsin.ingest.credentials import credential_of
from tocsin.ingest.formats import Format, Refusal, RefusedError, Work
from tocsin.ingest.metrics import ALERTS_RECEIVED, REQUEST_DURATION, REQUESTS_REJECTED
from tocsin.ingest.producers import AuthError, Producer, ProducerAuth
from tocsin.ingest.tracecontext import continue_trace

__all__ = [
    "AcceptPipeline",
    "Answer",
    "ProducerEndpoint",
    "ProducerHeaders",
    "producer_headers",
]

_MAX_IDEMPOTENCY_KEY = 255


@dataclass
class ProducerHeaders:
    """The request headers ingest reads, picked in one pass over the raw headers."""

    authorization: str = ""
    content_length: str | None = None
    idempotency_key: str = ""
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def bearer(self) -> str:
        return credential_of(self.authorization)

    def trace_carrier(self) -> dict[str, str]:
        """The W3C trace context headers sent, as `ServerSpans` reads them."""
        carrier = {}
        if self.traceparent is not None:
            carrier["traceparent"] = self.traceparent
        if self.tracestate is not None:
            carrier["tracestate"] = self.tracestate
        return carrier


# ASGI servers deliver header names lower-cased.
_WANTED_HEADERS = {
    b"authorization": "authorization",
    b"content-length": "content_length",
    b"idempotency-key": "idempotency_key",
    b"traceparent": "traceparent",
    b"tracestate": "tracestate",
}


def producer_headers(raw: list[tuple[bytes, bytes]]) -> ProducerHeaders:
    headers = ProducerHeaders()
    for name, value in raw:
        field_name = _WANTED_HEADERS.get(name)
        if field_name is not None:
            setattr(headers, field_name, value.decode("latin-1"))
    return headers


def _request_digest(fmt: Format, body: bytes) -> bytes:
    """What an Idempotency-Key is bound to: the endpoint (its format) and the body."""
    return hashlib.sha256(fmt.name.encode() + b"\n" + body).hexdigest().encode()


class AcceptPipeline:
    """The steps every producer request takes, over one producer auth and one admission."""

    def __init__(self, auth: ProducerAuth, admission: Admission, *, backlog_retry_after: int):
        self._auth = auth
        self._admission = admission
        self._backlog_retry_after = backlog_retry_after
        # The counter's child per (format, producer), kept here rather than looked up
        # through `labels()` (which validates and locks) on every request.
        self._alerts_received: dict[tuple[str, str], Counter] = {}

    async def accept(self, fmt: Format, scope: Scope, receive: Receive) -> tuple[Work, str, bool]:
        """The work a request becomes, its traceparent, and whether it was a replay."""
        headers = producer_headers(scope["headers"])
        if len(headers.idempotency_key) > _MAX_IDEMPOTENCY_KEY:
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
        if credential or not fmt.credential_in_body:
            producer = self.known(credential) or await self.authenticate(credential)
        body = await self.read(fmt, receive, headers.content_length)
        if producer is None:
            try:
                credential = fmt.body_credential(body)
            except (InvalidBodyError, UnicodeDecodeError) as exc:
                raise RefusedError(_invalid(fmt, exc)) from None
            producer = await self.authenticate(credential)
        # With tracing on, the message continues the request's PRODUCER span.
        traceparent = current_traceparent() or continue_trace(headers.traceparent)
        work = self.parse(fmt, body, producer)
        if work.actor == queues.PROCESS_ALERTS_ACTOR and not work.alerts:
            # An empty Alertmanager notification or push: nothing to queue, as Alertmanager.
            return work, traceparent, False
        work, replayed = await self.admit(
            fmt, work, producer, traceparent, headers.idempotency_key, body
        )
        return work, traceparent, replayed

    def known(self, credential: str) -> Producer | None:
        """Step 1 when no Redis read is needed (see `ProducerAuth.known`), else `None`."""
        try:
            return self._auth.known(credential)
        except AuthError as exc:
            raise RefusedError(_unauthenticated(exc)) from None

    async def authenticate(self, credential: str) -> Producer:
        """Step 1: who sends (an API key or an `ingest`-scoped JWT)."""
        try:
            return await self._auth.authenticate(credential)
        except AuthError as exc:
            raise RefusedError(_unauthenticated(exc)) from None
        except StoreError as exc:
            raise RefusedError(
                Refusal(
                    503,
                    "unavailable",
                    "Service unavailable",
                    f"credentials cannot be checked: {exc}",
                    retry_after=1,
                )
            ) from None

    async def read(self, fmt: Format, receive: Receive, declared: str | None) -> bytes:
        """Step 2: the body, bounded by the format's limit."""
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

    def parse(self, fmt: Format, body: bytes, producer: Producer) -> Work:
        """Step 3: the work the body becomes, in the format's terms."""
        try:
            return fmt.parse(body, producer)
        except (InvalidBodyError, UnicodeDecodeError) as exc:
            raise RefusedError(_invalid(fmt, exc)) from None

    async def admit(
        self,
        fmt: Format,
        work: Work,
        producer: Producer,
        traceparent: str,
        idempotency_key: str,
        body: bytes,
    ) -> tuple[Work, bool]:
        """Step 4: the work's message onto the alerts queue; the work as answered, and
        whether the answer is a replay of an earlier request with the same key."""
        command = self.admission_command(fmt, work, producer, traceparent, idempotency_key, body)
        try:
            verdict = await self._admission.admit_command(command)
        except StoreError as exc:
            raise _store_refused(exc) from None
        return self.settle(fmt, work, producer, verdict)

    def admission_command(
        self,
        fmt: Format,
        work: Work,
        producer: Producer,
        traceparent: str,
        idempotency_key: str,
        body: bytes,
    ) -> bytes:
        """Step 4's command: the work's message, for `Admission.send`."""
        message_id, message = encode_message(
            queues.ALERTS_QUEUE, work.actor, work.args, {"traceparent": traceparent}
        )
        return self._admission.command(
            producer.name,
            message_id,
            message,
            cost=max(1, work.alerts),
            answer=work.answer,
            idempotency_key=idempotency_key,
            request_digest=_request_digest(fmt, body) if idempotency_key else b"",
        )

    def send_admission(self, command: bytes, *, cached: bool = True) -> Awaitable[Any]:
        """Run admission on `command` without awaiting it (see `Admission.send`), for the
        fast path; `verdict` reads the reply."""
        return self._admission.send(command, cached=cached)

    def settle(
        self, fmt: Format, work: Work, producer: Producer, verdict: Verdict
    ) -> tuple[Work, bool]:
        """Step 4's outcome: the work as answered and whether it is a replay; raises
        `RefusedError` when admission refused it."""
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
                    retry_after=self._backlog_retry_after,
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
            return msgspec.structs.replace(work, answer=verdict.replay), True
        if work.alerts:
            received = self._alerts_received.get((fmt.name, producer.name))
            if received is None:
                received = ALERTS_RECEIVED.labels(fmt.name, producer.name)
                self._alerts_received[fmt.name, producer.name] = received
            received.inc(work.alerts)
        return work, False


def _store_refused(exc: StoreError) -> RefusedError:
    """A failed admission as its refusal: the outcome unknown (504) or nothing enqueued (503)."""
    if isinstance(exc, OutcomeUnknownError):
        # Sent, then no answer: Redis may have enqueued it. Not a refusal (503):
        # a retry with the same Idempotency-Key is safe, one without may count twice.
        return RefusedError(
            Refusal(
                504,
                "outcome_unknown",
                "Outcome unknown",
                f"the queue did not answer after the request was sent ({exc}): it may "
                "have been accepted; retry with the same Idempotency-Key to be safe",
                retry_after=1,
            )
        )
    return RefusedError(
        Refusal(
            503,
            "unavailable",
            "Service unavailable",
            f"the queue is unreachable, nothing was enqueued: {exc}",
            retry_after=1,
        )
    )


def _unauthenticated(exc: AuthError) -> Refusal:
    if exc.status == 403:
        return Refusal(exc.status, "forbidden", "Forbidden", f"{exc.code}: {exc}")
    return Refusal(exc.status, "unauthenticated", "Unauthorized", f"{exc.code}: {exc}")


def _invalid(fmt: Format, exc: InvalidBodyError | UnicodeDecodeError) -> Refusal:
    if isinstance(exc, UnicodeDecodeError):
        # msgspec reports invalid UTF-8 inside a JSON string this way, not as DecodeError.
        return Refusal(400, "invalid", "Invalid request", f"the body is not valid UTF-8: {exc}")
    return Refusal(fmt.invalid_status, "invalid", "Invalid request", str(exc), exc.errors)


# What the fast path hands the server to write: status, headers (after uvicorn's
# default ones) and body.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class ProducerEndpoint:
    """One producer endpoint as a plain ASGI app: its format through the accept pipeline.

    It answers from the ASGI scope directly, without Starlette's Request and
    Response objects: this is the path every alert takes, so it stays short.
    `accept_now` is the same pipeline for a request whose head and body the
    server has already read (`tocsin.ingest.fastpath`), without ASGI at all;
    it needs the `path` the endpoint serves, which names its server spans.
    """

    def __init__(self, fmt: Format, pipeline: AcceptPipeline, path: str) -> None:
        self.path = path
        self._format = fmt
        self._pipeline = pipeline
        self._duration = REQUEST_DURATION.labels(fmt.name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        fmt = self._format
        try:
            if tracing_enabled():
                # The request's enqueue, as Dramatiq's tracing middleware would record it.
                with producer_span(queues.ALERTS_QUEUE):
                    work, traceparent, replayed = await self._pipeline.accept(fmt, scope, receive)
            else:
                work, traceparent, replayed = await self._pipeline.accept(fmt, scope, receive)
        except RefusedError as refused:
            REQUESTS_REJECTED.labels(fmt.name, refused.refusal.reason).inc()
            await fmt.refusal_answer(refused.refusal)(scope, receive, send)
        else:
            status, headers, answer = _accepted(work, traceparent, replayed)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": answer})
        self._duration.observe(time.perf_counter() - started)

    def accept_now(
        self, headers: ProducerHeaders, body: bytes, respond: Callable[[Answer], None]
    ) -> bool:
        """Take a request whose head and whole body are read, if nothing needs awaiting
        before its admission; `respond` then gets its answer once Redis has replied.

        False, with nothing done, when the request is not that simple -- a
        credential not verified lately or inside the body, anything refused before
        admission, an empty batch -- so the server runs it through `__call__`, which
        answers it (and counts the refusal) the one way every request is answered.

        With tracing on, it is traced as uvicorn's path traces it (`ServerSpans`
        around `__call__`): a SERVER span, and inside it the enqueue's PRODUCER
        span, current while the steps run, so the message carries its context;
        both end once the answer is written. A request handed back to uvicorn's
        path leaves its spans unended, so unrecorded: that path traces it anew.
        """
        started = time.perf_counter()
        if not tracing_enabled():
            return self._accept_now(headers, body, respond, started, None)
        server = start_server_span("POST", self.path, headers.trace_carrier())
        producer = start_producer_span(queues.ALERTS_QUEUE, trace.set_span_in_context(server))
        token = otel_context.attach(trace.set_span_in_context(producer))
        try:
            return self._accept_now(headers, body, respond, started, (server, producer))
        finally:
            otel_context.detach(token)

    def _accept_now(
        self,
        headers: ProducerHeaders,
        body: bytes,
        respond: Callable[[Answer], None],
        started: float,
        spans: tuple[trace.Span, trace.Span] | None,
    ) -> bool:
        fmt, pipeline = self._format, self._pipeline
        if len(headers.idempotency_key) > _MAX_IDEMPOTENCY_KEY:
            return False
        if len(body) > fmt.body_limit:
            return False
        credential = headers.bearer
        if not credential and fmt.credential_in_body:
            return False
        try:
            producer = pipeline.known(credential)
            if producer is None:
                return False
            work = pipeline.parse(fmt, body, producer)
        except RefusedError:
            return False
        if work.actor == queues.PROCESS_ALERTS_ACTOR and not work.alerts:
            return False
        traceparent = current_traceparent() or continue_trace(headers.traceparent)
        key = headers.idempotency_key
        command = pipeline.admission_command(fmt, work, producer, traceparent, key, body)
        admitting = _Admitting(self, work, producer, traceparent, command, respond, started)
        admitting.spans = spans
        admitting.send(pipeline)
        return True

    def _settled(self, admitting: _Admitting, result: Any) -> Answer:
        """The answer of a request on the fast path, from its admission's reply."""
        fmt = self._format
        try:
            # As `__call__`'s PRODUCER span: a refusal escapes it, recorded as an error.
            with admitting.enqueue_span():
                if isinstance(result, BaseException):
                    if isinstance(result, StoreError):
                        raise _store_refused(result)
                    raise result
                work, replayed = self._pipeline.settle(
                    fmt, admitting.work, admitting.producer, verdict(result)
                )
        except RefusedError as refused:
            REQUESTS_REJECTED.labels(fmt.name, refused.refusal.reason).inc()
            response = fmt.refusal_answer(refused.refusal)
            answer: Answer = (response.status_code, response.raw_headers, bytes(response.body))
        else:
            answer = _accepted(work, admitting.traceparent, replayed)
        self._duration.observe(time.perf_counter() - admitting.started)
        return answer


class _Admitting:
    """A request on the fast path while Redis runs its admission script."""

    __slots__ = (
        "cached",
        "command",
        "endpoint",
        "producer",
        "respond",
        "spans",
        "started",
        "traceparent",
        "work",
    )

    def __init__(
        self,
        endpoint: ProducerEndpoint,
        work: Work,
        producer: Producer,
        traceparent: str,
        command: bytes,
        respond: Callable[[Answer], None],
        started: float,
    ) -> None:
        self.endpoint = endpoint
        self.work = work
        self.producer = producer
        self.traceparent = traceparent
        self.command = command
        self.respond = respond
        self.started = started
        self.cached = True
        # The SERVER and PRODUCER spans of the request, with tracing on.
        self.spans: tuple[trace.Span, trace.Span] | None = None

    def enqueue_span(self) -> AbstractContextManager[object]:
        """The PRODUCER span current while admission settles, ended after it."""
        if self.spans is None:
            return _NO_SPAN
        return trace.use_span(self.spans[1], end_on_exit=True)

    def send(self, pipeline: AcceptPipeline) -> None:
        reply: asyncio.Future[Any]
        try:
            sent = pipeline.send_admission(self.command, cached=self.cached)
            # Connected, it is the reply's future itself; connecting, a coroutine.
            reply = sent if isinstance(sent, asyncio.Future) else asyncio.ensure_future(sent)
        except Exception as exc:
            # Past this point the request is answered here, whatever happens: the
            # command may be on its way to Redis, so it must not run a second time.
            reply = asyncio.get_running_loop().create_future()
            reply.set_exception(exc)
        reply.add_done_callback(self._replied)

    def _replied(self, reply: asyncio.Future[Any]) -> None:
        endpoint = self.endpoint
        try:
            exc = reply.exception()
            if self.cached and isinstance(exc, RedisReplyError) and needs_script(exc):
                # As `AcceptPipeline.admit`: the server lost the script; send it along.
                self.cached = False
                self.send(endpoint._pipeline)
                return
            answer = endpoint._settled(self, exc if exc is not None else reply.result())
        except BaseException as exc:
            # What uvicorn does when an application raises: log it, answer 500, close.
            _logger.error("Exception in ASGI application\n", exc_info=exc)
            if self.spans is not None and isinstance(exc, Exception):
                server_span_failed(self.spans[0], exc)  # as `ServerSpans`, before uvicorn's 500
            self.respond(_INTERNAL_ERROR)
        else:
            if self.spans is not None:
                server_span_answered(self.spans[0], answer[0])
            self.respond(answer)
        if self.spans is not None:
            end_server_span(self.spans[0], "POST", endpoint.path)


_logger = logging.getLogger("uvicorn.error")
_NO_SPAN: nullcontext[None] = nullcontext()
_INTERNAL_ERROR: Answer = (
    500,
    [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"21"),
        (b"connection", b"close"),
    ],
    b"Internal Server Error",
)


def _accepted(work: Work, traceparent: str, replayed: bool) -> Answer:
    """The answer of accepted (or replayed) work."""
    headers = [
        (b"content-length", b"%d" % len(work.answer)),
        (b"traceparent", traceparent.encode()),
    ]
    if work.media_type:
        headers.append((b"content-type", work.media_type))
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    return work.status, headers, work.answer
