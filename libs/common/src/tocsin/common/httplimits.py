"""HTTP/1.1 limits and timeouts of the services' servers (uvicorn with httptools), set in one place.

uvicorn's httptools protocol bounds neither a request's head nor the time a
client takes to send it: one unfinished request can hold 64 MiB of headers,
a URL can be 32 MiB long, and a client that sends a byte now and then
(slowloris) keeps its connection forever. `LimitedHttpToolsProtocol` adds:

- the head (request line and headers) bounded in bytes, the URL in bytes and
  the header fields in number: 431 or 414, then the connection closes;
- a head timeout (from a request's first byte to the end of its headers) and
  a body timeout (from the end of its headers to the end of its body): 408,
  then the connection closes;
- an idle (keep-alive) timeout between requests, which also applies before a
  connection's first request; bytes that start no request do not reset it;
- a send timeout: a connection whose answer has waited on the client (the
  transport's writes paused, the application's send blocked) for longer is
  dropped, so a client that never reads cannot hold an answer, its buffers and
  the task writing it for ever;
- at most `_MAX_PIPELINED` requests waiting behind the one being answered (httptools
  parses every request a read holds, and uvicorn queues them all): a client
  that sends more before reading its answers is dropped, since answers must
  keep their order and an error answer cannot jump the queue.

Refusals are RFC 9457 problem+json, sent before any of the request reaches
the application. The values come from `HttpServerSettings`, which every
service with an HTTP API (ingest, gateway) derives its settings from; the
README's configuration table and docs/http.md list them.

Bodies are bounded in bytes by the application, per endpoint, through
`read_body` (ASGI) or `read_request_body` (a Starlette request): a declared
Content-Length over the bound is refused before any of the body is read, a
streamed body as soon as it passes the bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any, ClassVar

import httptools
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from tocsin.common.config import CommonSettings, setting
from tocsin.common.errors import InvalidInputError, LimitExceededError, TocsinError
from tocsin.common.problems import problem
from tocsin.common.uvicorn_shim import STATUS_LINE, ServerProtocol

__all__ = [
    "BodyTooLargeError",
    "ClientGoneError",
    "HttpLimits",
    "HttpServerSettings",
    "LimitedHttpToolsProtocol",
    "read_body",
    "read_request_body",
]

# How long a connection that was told to close may take to send what it holds
# before it is dropped: a client that never reads must not keep it open.
_CLOSE_GRACE = 5.0
# Requests queued behind the one being answered (HTTP/1.1 pipelining, which
# real clients barely use) before the connection is dropped.
_MAX_PIPELINED = 32


@dataclasses.dataclass(frozen=True)
class HttpServerSettings(CommonSettings):
    """Settings of a service that serves an HTTP API to clients (ingest, gateway)."""

    http_max_head_bytes: int = setting(
        65_536, "Largest HTTP request head (request line and headers), in bytes (431 beyond)."
    )
    http_max_url_bytes: int = setting(8_192, "Longest HTTP request URL, in bytes (414 beyond).")
    http_max_headers: int = setting(100, "Most header fields in one HTTP request (431 beyond).")
    http_head_timeout: float = setting(
        10.0,
        "Seconds from an HTTP request's first byte to the end of its headers (408 beyond; "
        "each request up to a quarter more, at random).",
    )
    http_body_timeout: float = setting(
        30.0, "Seconds from the end of an HTTP request's headers to the end of its body (408)."
    )
    http_keepalive_timeout: float = setting(
        120.0,
        "Seconds an idle HTTP connection is kept open, between requests and before the first "
        "(longer than client pools keep idle connections: Go's 90 s, so Prometheus's).",
    )
    http_send_timeout: float = setting(
        30.0,
        "Seconds an HTTP answer may wait on a client that does not read it (writes paused) "
        "before the connection is dropped.",
    )

    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            max_head_bytes=self.http_max_head_bytes,
            max_url_bytes=self.http_max_url_bytes,
            max_headers=self.http_max_headers,
            head_timeout=self.http_head_timeout,
            body_timeout=self.http_body_timeout,
            keepalive_timeout=self.http_keepalive_timeout,
            send_timeout=self.http_send_timeout,
        )


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """The limits one server applies to every connection (see the module's docstring)."""

    max_head_bytes: int = 65_536
    max_url_bytes: int = 8_192
    max_headers: int = 100
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 120.0
    send_timeout: float = 30.0


class _PipelineOverflowError(InvalidInputError):
    """More pipelined requests than a connection may queue: it is dropped unanswered."""


def _head_too_large(limits: HttpLimits) -> LimitExceededError:
    return LimitExceededError(
        431,
        "header-fields-too-large",
        "Request Header Fields Too Large",
        f"a request head is limited to {limits.max_head_bytes} bytes "
        f"and {limits.max_headers} header fields",
    )


class LimitedHttpToolsProtocol(ServerProtocol):
    """uvicorn's httptools protocol with `limits` applied; `with_limits` makes a subclass
    carrying a server's own."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[LimitedHttpToolsProtocol]:
        return type(cls.__name__, (cls,), {"limits": limits, "__module__": cls.__module__})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own keep-alive timer, armed after each response, uses the same value
        # (uvicorn types it as int; it only ever hands it to `call_later`).
        self.timeout_keep_alive = self.limits.keepalive_timeout  # type: ignore[assignment]
        self._deadline: asyncio.TimerHandle | None = None
        # Armed while the transport's writes are paused (see `pause_writing`).
        self._send_deadline: asyncio.TimerHandle | None = None
        # Bytes received since the current request's head began (or since the last one ended).
        self._head_bytes = 0
        self._awaiting_head = True
        self._header_count = 0
        self._head_size = 0

    # -- the connection -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.keepalive_timeout, self._shut)

    def idle_until(self, when: float) -> None:
        """Keep the idle deadline (loop time) of whoever held the connection before it
        was handed over here, rather than a fresh one."""
        self._disarm()
        self._deadline = self.loop.call_at(when, self._shut)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._end_send_wait()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        # The client is not reading what it was sent: give it `send_timeout` to start.
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(self.limits.send_timeout, self._send_expired)

    def resume_writing(self) -> None:
        self._end_send_wait()
        super().resume_writing()

    def _end_send_wait(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _send_expired(self) -> None:
        # Nothing more can reach a client that reads nothing; the application's
        # blocked send then learns of the loss and its task ends.
        self._send_deadline = None
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        # As uvicorn's, except that only the start of a request resets the idle timer.
        if self._awaiting_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _PipelineOverflowError):
                self.parser = None  # type: ignore[assignment]
                self.transport.abort()
            elif isinstance(refusal, LimitExceededError):
                self._answer_limit(refusal)
            else:
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            self._disarm()
            self._end_send_wait()
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._awaiting_head and self._head_bytes > self.limits.max_head_bytes:
            # httptools gathers a header's name and value before it reports them.
            self._answer_limit(_head_too_large(self.limits))

    # -- parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if len(self.pipeline) >= _MAX_PIPELINED:
            raise _PipelineOverflowError
        super().on_message_begin()
        self._unset_keepalive_if_required()
        self._header_count = 0
        self._head_size = 0
        # Up to a quarter longer, at random: connections opened together (slowloris) would
        # otherwise all be answered 408 in the same loop turn.
        self._arm(self.limits.head_timeout * (1 + random.random() / 4), self._head_expired)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url_bytes:
            raise LimitExceededError(
                414,
                "uri-too-long",
                "URI Too Long",
                f"a request URL is limited to {self.limits.max_url_bytes} bytes",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        if (
            self._header_count > self.limits.max_headers
            or self._head_size + len(self.url) > self.limits.max_head_bytes
        ):
            raise _head_too_large(self.limits)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._disarm()
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._arm(self.limits.body_timeout, self._body_expired)

    def on_message_complete(self) -> None:
        self._disarm()
        self._awaiting_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def timeout_keep_alive_handler(self) -> None:
        self._shut()

    # -- timers and answers -------------------------------------------------------------

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_expired(self) -> None:
        self._deadline = None
        self._answer_limit(
            LimitExceededError(
                408,
                "request-timeout",
                "Request Timeout",
                f"a request's headers must arrive within {self.limits.head_timeout:g} s",
            )
        )

    def _body_expired(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            # The application answered already; what is still coming is not wanted.
            self._shut()
            return
        self._answer_limit(
            LimitExceededError(
                408,
                "request-timeout",
                "Request Timeout",
                f"a request's body must arrive within {self.limits.body_timeout:g} s",
            )
        )

    def _answer_limit(self, refusal: LimitExceededError) -> None:
        """Answer `refusal` and close; the application (if it runs) sees a disconnect."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self._shut()
                return
            # Its later writes go nowhere; its reads return `http.disconnect`.
            cycle.disconnected = True
            cycle.message_event.set()
        response = problem(refusal.status, refusal.kind, refusal.title, refusal.detail)
        head = [STATUS_LINE[refusal.status]]
        head += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
        head.append(b"connection: close\r\n\r\n")
        self.parser = None  # type: ignore[assignment]
        if not self.transport.is_closing():
            self.transport.write(b"".join(head) + bytes(response.body))
        self._shut()

    def _shut(self) -> None:
        """Close the connection; drop it if it has not closed within a grace period."""
        self._disarm()
        self._unset_keepalive_if_required()
        transport = self.transport
        if not transport.is_closing():
            transport.close()
        self._deadline = self.loop.call_later(_CLOSE_GRACE, transport.abort)


class BodyTooLargeError(InvalidInputError):
    """The request body is over the endpoint's limit."""


class ClientGoneError(TocsinError):
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


async def read_request_body(request: Request, limit: int, what: str) -> bytes | Response:
    """A Starlette request's body, or the 413 problem that refuses it (`what`: its name)."""
    try:
        return await read_body(request.receive, limit, request.headers.get("content-length"))
    except BodyTooLargeError:
        return problem(
            413, "body-too-large", "Request body too large", f"{what} is at most {limit} bytes"
        )
    except ClientGoneError:
        # Nobody reads this answer; it only ends the request without a traceback.
        return problem(400, "client-gone", "Client disconnected")
