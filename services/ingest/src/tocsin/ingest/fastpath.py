"""The fast path: a plain producer POST answered without ASGI.

Profiles of one alert per request put as much of ingest's CPU in uvicorn's
per-request machinery -- a parser callback per header, a scope, a
request/response cycle with its event, an ASGI task, two `send` calls that
check every header again -- as in the accept pipeline itself. Most producers
(Prometheus, Alertmanager, scripts) send the same simple request every time:
one `POST` to a push route, HTTP/1.1, a Content-Length body that arrives in the
same read as its head.

`FastPathProtocol` recognises exactly that request in the bytes of one read
(`scan`) and hands it to its endpoint's `accept_now`, which runs the same
pipeline steps as the ASGI endpoint and answers from the admission script's
reply; the protocol writes the answer as uvicorn would have
(`ServerProtocol.answer_bytes`). Anything else takes uvicorn's path, with the
same bytes, unchanged: another route or method, a query string, HTTP/1.0,
Transfer-Encoding, Expect, Upgrade, a Connection header other than
`keep-alive`, a repeated header the pipeline reads, a header line that is not
plainly `name: value` (obs-fold, trailing white space, control bytes), a body
that is not complete or is followed by more bytes (pipelining), a head near any
limit of `tocsin.common.httplimits`, a request the pipeline would refuse before
admission or could only accept after awaiting (an API key not verified lately,
PagerDuty's key in the body), a client that is not reading its answers, and
every request while uvicorn has one in hand. So the limits, the
refusals and their wording stay uvicorn's and the ASGI endpoint's; what the
fast path answers itself is only what admission decides, through the same code.
With tracing on, it records the spans uvicorn's path records (`ServerSpans`
around the endpoint), through the same functions, and the message carries the
same trace context.

While a fast request waits for Redis, the connection stops reading and holds
what arrives; answered, it goes on with those bytes. Its idle (keep-alive)
timer is re-armed lazily: one timer per idle period rather than per request.
`tests/integration/test_ingest_fastpath.py` sends the same requests through
both paths and compares what comes back and what is queued.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from tocsin.common.httplimits import HttpLimits
from tocsin.ingest.accept import Answer, ProducerEndpoint, ProducerHeaders
from tocsin.ingest.httpserver import CoalescedTransport, CoalescingHttpToolsProtocol

__all__ = ["FastPathProtocol", "FastRequest", "scan"]

# A head of the plain shape: the request line, then `name: value` lines with
# RFC 9110 token names and values of tabs, spaces, visible characters and
# obs-text (no control bytes, so no bare CR or LF either), then the empty line.
# White space ending a line (checked apart) is not plain either.
_HEAD = re.compile(
    rb"POST /[\x21-\x7e]* HTTP/1\.1\r\n"
    rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r\n)*"
    rb"\r\n"
)
# The headers the accept pipeline reads (as `ProducerHeaders`), and those that
# change how a request is framed or answered, with their values (in a head
# already found plain, so a value ends at the next CR).
_SPECIAL = re.compile(
    rb"\r\n(content-length|authorization|idempotency-key|traceparent|tracestate"
    rb"|connection|transfer-encoding|expect|upgrade):[ \t]*([^\r]*)"
)
_READ = {
    b"authorization": "authorization",
    b"content-length": "content_length",
    b"idempotency-key": "idempotency_key",
    b"traceparent": "traceparent",
    b"tracestate": "tracestate",
}
# A Content-Length longer than this is not a body the fast path takes.
_MAX_LENGTH_DIGITS = 12

FastRequest = tuple[ProducerEndpoint, ProducerHeaders, bytes]


def scan(
    data: bytes, endpoints: Mapping[bytes, ProducerEndpoint], limits: HttpLimits
) -> FastRequest | None:
    """The one plain producer POST that `data` holds entirely, or None (see the module)."""
    if not data.startswith(b"POST /"):
        return None
    space = data.find(b" ", 5, 5 + limits.max_url_bytes + 1)
    endpoint = endpoints.get(data[5:space]) if space > 0 else None
    if endpoint is None:
        return None
    end = data.find(b"\r\n\r\n", space, limits.max_head_bytes)
    if end < 0:
        return None
    head = data[: end + 4]
    lines = head.count(b"\r\n") - 2  # header lines
    # uvicorn's measure (name, value and 4 per field, plus the URL) is under this.
    if lines > limits.max_headers or len(head) + lines > limits.max_head_bytes:
        return None
    if _HEAD.fullmatch(head) is None or b" \r\n" in head or b"\t\r\n" in head:
        return None
    headers = ProducerHeaders()
    seen = set()
    for match in _SPECIAL.finditer(head.lower()):
        name = match[1]
        field = _READ.get(name)
        if field is None and (name != b"connection" or match[2] != b"keep-alive"):
            return None
        if name in seen:  # which one counts is uvicorn's call
            return None
        seen.add(name)
        if field is not None:
            start, stop = match.span(2)
            setattr(headers, field, head[start:stop].decode("latin-1"))
    length = headers.content_length
    if length is None or not (0 < len(length) <= _MAX_LENGTH_DIGITS and length.isdigit()):
        return None
    if len(data) - len(head) != int(length):  # incomplete, or pipelined requests behind
        return None
    return endpoint, headers, data[len(head) :]


class FastPathProtocol(CoalescingHttpToolsProtocol):
    """Ingest's HTTP/1.1 protocol, answering plain producer POSTs on the fast path.

    `serving` makes the subclass a server runs, with its endpoints by path
    (none: every request takes uvicorn's path) and its limits.
    """

    endpoints: ClassVar[Mapping[bytes, ProducerEndpoint]] = {}

    @classmethod
    def serving(
        cls, endpoints: Mapping[str, ProducerEndpoint], limits: HttpLimits
    ) -> type[FastPathProtocol]:
        by_target = {path.encode(): endpoint for path, endpoint in endpoints.items()}
        attributes = {"limits": limits, "endpoints": by_target, "__module__": cls.__module__}
        return type(cls.__name__, (cls,), attributes)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast = bool(self.endpoints) and self.plain_server()
        # A fast request is waiting for its answer; what arrives meanwhile is held.
        self._answering = False
        self._held = b""
        self._close_after_answer = False
        # Whether the parser is inside a request uvicorn is reading.
        self._in_message = False
        # Since when the connection is idle after a fast answer (None: not idle),
        # and the timer that closes it once idle for the keep-alive timeout.
        self._idle_since: float | None = None
        self._idle_timer: Any = None

    def data_received(self, data: bytes) -> None:
        if self._answering:
            self._held += data
            self.pause_reading()
            return
        if (
            self._fast
            and not self._in_message
            and self.between_requests()
            and not self.writes_paused()
            and not self.transport.is_closing()
        ):
            request = scan(data, self.endpoints, self.limits)
            if request is not None:
                endpoint, headers, body = request
                try:
                    taken = endpoint.accept_now(headers, body, self._respond)
                except Exception:
                    # Nothing was sent to Redis: uvicorn's path runs it and answers
                    # the error as it answers an application's.
                    taken = False
                if taken:
                    # As when uvicorn starts a request: no idle timer runs for it.
                    self._answering = True
                    self._idle_since = None
                    self._unset_keepalive_if_required()
                    self._disarm()
                    return
        super().data_received(data)

    def _respond(self, answer: Answer) -> None:
        """Write a fast request's answer, then go on with what arrived meanwhile."""
        self._answering = False
        transport = self.transport
        if transport.is_closing():
            return
        status, headers, body = answer
        close = self._close_after_answer or (b"connection", b"close") in headers
        if self._close_after_answer and (b"connection", b"close") not in headers:
            headers = [*headers, (b"connection", b"close")]
        data = self.answer_bytes(status, headers, body)
        if isinstance(transport, CoalescedTransport):
            transport.write_now(data)
        else:
            transport.write(data)
        if close:
            self._shut()
            return
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(
                self.limits.keepalive_timeout, self._idle_expired
            )
        if self._held:
            held, self._held = self._held, b""
            self.resume_reading()
            self.data_received(held)

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self._idle_since is None or self.transport.is_closing():
            return  # a request started since: whoever answers it arms the timer again
        remaining = self._idle_since + self.limits.keepalive_timeout - self.loop.time()
        if remaining > 0:
            self._idle_timer = self.loop.call_later(remaining, self._idle_expired)
        else:
            self._shut()

    def on_message_begin(self) -> None:
        self._in_message = True
        self._idle_since = None  # uvicorn's path keeps its own timers for this request
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def shutdown(self) -> None:
        if self._answering:
            # Answer what was admitted, then close, as uvicorn does with its own requests.
            self._close_after_answer = True
            return
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._held = b""
        super().connection_lost(exc)
