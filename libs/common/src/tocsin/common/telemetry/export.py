"""Span export in a child process: a serving process only hands finished spans over a pipe.

Encoding spans as OTLP protobuf costs tens of microseconds per span in Python,
all of it under the GIL. Done by the SDK's BatchSpanProcessor thread inside a
service, it held the GIL for tens of milliseconds per batch and stalled the
event loop serving requests: ingest's answer p99 went from 3 to about 30 ms
with tracing on (issue 14). Here:

- the services' spans are recorded as tuples of plain values where they end
  (`RecordingTracerProvider` in `spans`, handing them to `SpanPipe.hand`); as
  an SDK span processor, `SpanPipe` reduces an SDK span to the same tuple;
- its writer thread sends the queued tuples every `HAND_OFF_SECONDS` (or at
  `HAND_OFF_SPANS`) down a pipe as one length-prefixed `marshal` frame: one
  C-speed call and a write that releases the GIL (marshal, not pickle: it
  takes only plain values, and the child runs no code from the pipe);
- the child (`python -m tocsin.common.telemetry.exporter`, at a lower CPU
  priority) batches them with the SDK's BatchSpanProcessor, encodes them itself
  (`otlp.encode_records`) and sends them with the SDK's OTLP/HTTP exporter,
  configured by the same `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_*` variables a
  service would read.

Bounds and faults: at most `MAX_QUEUED_SPANS` wait in the serving process;
beyond it spans are dropped and counted in the log, as the BatchSpanProcessor
drops when its queue is full (`tocsin_spans_dropped_total`). A child that dies,
or stops reading for `WRITE_TIMEOUT_SECONDS`, is replaced (at most every
`RESTART_PAUSE_SECONDS`); what was in its pipe is lost. The child ends
when the pipe closes, after exporting what it read, so it never outlives its
parent, even one killed by SIGKILL.

The frames: `(RESOURCE, (attributes, schema_url))` once first, then
`(SPANS, [span, ...])` and `(FLUSH, n)`, which the child answers on its stdout
with `n` (8 bytes, big-endian) and whether everything before it was exported
(1 byte), after trying to export it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import marshal
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext
from prometheus_client import Counter

__all__ = [
    "FLUSH",
    "FLUSHED",
    "FRAME_LENGTH",
    "RESOURCE",
    "SPANS",
    "WRITE_TIMEOUT_SECONDS",
    "SpanPipe",
    "SpanRecord",
]

log = logging.getLogger(__name__)

# How often, at most, queued spans go down the pipe, and the count that sends them at once.
HAND_OFF_SECONDS = 0.1
HAND_OFF_SPANS = 256
# Spans that may wait in the serving process while the child is behind or restarting.
MAX_QUEUED_SPANS = 4096
RESTART_PAUSE_SECONDS = 5.0
# Longest a frame may wait for room in the pipe before the child counts as wedged.
WRITE_TIMEOUT_SECONDS = 10.0

# Dropped spans are logged at most this often (with the count since the last line).
DROP_LOG_SECONDS = 10.0

SPANS_DROPPED = Counter(
    "tocsin_spans_dropped_total",
    "Finished spans not exported: the exporting process was behind, restarting or gone.",
)

RESOURCE, SPANS, FLUSH = 0, 1, 2
FRAME_LENGTH = struct.Struct(">I")
FLUSHED = struct.Struct(">Q?")  # the flush answered, whether everything was exported

# A span as plain values (see `_record` for the order); marshal takes nothing else.
SpanRecord = tuple[Any, ...]


def _context_record(context: SpanContext) -> tuple[int, int, int, str]:
    return (
        context.trace_id,
        context.span_id,
        int(context.trace_flags),
        context.trace_state.to_header() if context.trace_state else "",
    )


def _plain(attributes: Any) -> dict[str, Any]:
    """An ended span's attributes as a dict, without copying when the SDK keeps one."""
    if not attributes:
        return {}
    # BoundedAttributes keeps a plain dict, no longer changed once the span has ended.
    kept = getattr(attributes, "_dict", None)
    return kept if type(kept) is dict else dict(attributes)


def _record(span: ReadableSpan) -> SpanRecord:
    """`span` as plain values, cheap enough to run where the span ends.

    It reads the ended span's fields directly rather than through the public
    properties, which copy each collection (this runs twice per request in
    ingest); `test_telemetry_export` compares the result, field by field, with
    the library's own encoding of the same spans.
    """
    context = span._context
    parent = span._parent
    status = span._status
    scope = span._instrumentation_scope
    events = span._events
    links = span._links
    assert context is not None  # an SDK span always has one
    return (
        span._name,
        _context_record(context),
        None if parent is None else (parent.span_id, parent.is_remote),
        span._kind._value_,
        span._start_time,
        span._end_time,
        _plain(span._attributes),
        (status.status_code._value_, status.description),
        [(e.name, e.timestamp, _plain(e.attributes), e.dropped_attributes) for e in events]
        if events
        else (),
        [
            (
                _context_record(ln.context),
                _plain(ln.attributes),
                ln.dropped_attributes,
                ln.context.is_remote,
            )
            for ln in links
        ]
        if links
        else (),
        (
            getattr(span._attributes, "dropped", 0),
            getattr(events, "dropped", 0),
            getattr(links, "dropped", 0),
        ),
        None if scope is None else (scope.name, scope.version, scope.schema_url),
    )


def _frame(kind: int, body: Any) -> bytes:
    payload = marshal.dumps((kind, body))
    return FRAME_LENGTH.pack(len(payload)) + payload


class SpanPipe(SpanProcessor):
    """The serving process's side: finished spans to an exporting child process."""

    def __init__(
        self,
        resource: Resource,
        *,
        environ: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        max_queued: int = MAX_QUEUED_SPANS,
        restart_pause: float = RESTART_PAUSE_SECONDS,
    ) -> None:
        self._resource_frame = _frame(
            RESOURCE, (dict(resource.attributes), resource.schema_url or "")
        )
        self._environ = dict(os.environ if environ is None else environ)
        self._command = list(command or [sys.executable, "-m", "tocsin.common.telemetry.exporter"])
        self._max_queued = max_queued
        self._restart_pause = restart_pause
        # No lock around it: a lock the writer held when the GIL switched threads made
        # the event loop wait a whole switch interval (5 ms) to end a span.
        self._queued: collections.deque[SpanRecord] = collections.deque()
        self._write_lock = threading.Lock()  # one writer of frames at a time
        self._flush_lock = threading.Lock()  # one reader of flush answers at a time
        self._flushes = 0
        self._dropped = 0  # since the last log line
        self._dropped_logged_at = 0.0
        self._wake = threading.Event()
        self._closing = False
        self._child: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        with self._write_lock:
            self._start_child()
        self._writer = threading.Thread(target=self._run, name="span-pipe", daemon=True)
        self._writer.start()

    @property
    def exporter_pid(self) -> int | None:
        """The exporting child's process id (None while it is gone)."""
        child = self._child
        return None if child is None else child.pid

    # -- the span processor interface ----------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return

    def on_end(self, span: ReadableSpan) -> None:
        if span.context.trace_flags.sampled:
            self.hand(_record(span))

    def hand(self, record: SpanRecord) -> None:
        """Queue one finished, sampled span for the child (dropped and counted when full).

        `on_end` calls it for an SDK span; `RecordingTracerProvider`'s spans call it directly.
        """
        if self._closing:
            return
        queued = self._queued
        if len(queued) >= self._max_queued:
            self._drop(1)
            return
        queued.append(record)
        if len(queued) == HAND_OFF_SPANS:
            self._wake.set()

    def shutdown(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._writer.join(10)
        with self._write_lock:
            self._send_queued()
            child, self._child = self._child, None
        if child is None:
            return
        with contextlib.suppress(OSError):
            assert child.stdin is not None
            child.stdin.close()  # the child exports what it read, then ends
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Hand over every queued span and wait until the child has exported it."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._flush_lock:
            self._flushes += 1
            wanted = self._flushes
            with self._write_lock:
                self._send_queued()
                child = self._child
                if child is None or not self._write(_frame(FLUSH, wanted)):
                    return False
            assert child.stdout is not None
            return _await_flushed(child.stdout, wanted, deadline)

    # -- the writer thread ----------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(HAND_OFF_SECONDS)
            self._wake.clear()
            with self._write_lock:
                self._send_queued()

    def _send_queued(self) -> None:
        """Send what is queued (holding `_write_lock`), restarting a dead child first."""
        queued = self._queued
        records = [queued.popleft() for _ in range(len(queued))]
        restart_due = time.monotonic() - self._started_at >= self._restart_pause
        if self._child is None and not self._closing and restart_due:
            self._start_child()
        if records and not (self._child is not None and self._write(_frame(SPANS, records))):
            self._drop(len(records))
        if self._dropped and time.monotonic() - self._dropped_logged_at >= DROP_LOG_SECONDS:
            # Approximate across threads, as log lines may be; the counter is exact.
            dropped, self._dropped = self._dropped, 0
            self._dropped_logged_at = time.monotonic()
            log.warning("dropped %d spans: the exporting process was behind or gone", dropped)

    def _drop(self, count: int) -> None:
        """Count `count` spans that will not be exported."""
        self._dropped += count
        SPANS_DROPPED.inc(count)

    def _start_child(self) -> None:
        self._started_at = time.monotonic()
        try:
            child = subprocess.Popen(
                self._command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self._environ,
            )
        except OSError:
            log.exception("could not start the span exporting process")
            self._child = None
            return
        assert child.stdin is not None
        # Written with a deadline (see `_write`): a stopped child must not hang shutdown.
        os.set_blocking(child.stdin.fileno(), False)
        self._child = child
        self._write(self._resource_frame)

    def _write(self, frame: bytes) -> bool:
        """Write `frame` whole within `WRITE_TIMEOUT_SECONDS`, else give up on the child.

        The GIL is released while waiting for the child to catch up; the child
        reads continuously (its own BatchSpanProcessor exports on another
        thread), so only a stopped or wedged child makes the deadline pass.
        """
        child = self._child
        if child is None or child.stdin is None:
            return False
        fd = child.stdin.fileno()
        pending = memoryview(frame)
        deadline = time.monotonic() + WRITE_TIMEOUT_SECONDS
        try:
            while pending:
                try:
                    pending = pending[os.write(fd, pending) :]
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("the span exporting process stopped reading") from None
                    select.select([], [fd], [], left)
            return True
        except (OSError, ValueError) as exc:
            log.warning(
                "the span exporting process is gone (%s, exit code %s); restarting it",
                exc,
                child.poll(),
            )
            self._child = None
            with contextlib.suppress(OSError):
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(1)
            return False


def _await_flushed(answers: IO[bytes], wanted: int, deadline: float) -> bool:
    """Read the child's flush answers until `wanted` (or a later one) or the deadline."""
    fd = answers.fileno()
    buffer = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            return False
        chunk = os.read(fd, 4096)
        if not chunk:
            return False
        buffer += chunk
        while len(buffer) >= FLUSHED.size:
            answered, exported = FLUSHED.unpack(buffer[: FLUSHED.size])
            buffer = buffer[FLUSHED.size :]
            if answered >= wanted:
                return bool(exported)
