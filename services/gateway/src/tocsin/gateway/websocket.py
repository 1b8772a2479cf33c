"""The gateway's own server side of RFC 6455, for `/ws`.

Connecting is what a mass reconnect costs, and it is CPU-bound. uvicorn's path
parses the upgrade request with httptools, writes it out again, has a
websockets-sansio protocol parse it a second time, then builds an ASGI scope,
headers objects and a task around the app. Here a plain upgrade, read whole in
a connection's first read, is read by hand (`tocsin.gateway.handshake`) and
never meets uvicorn's protocol; any other request goes to `UpgradeProtocol`
(uvicorn's httptools protocol with Tocsin's limits), which hands an upgrade it
has parsed to the same socket. A `SocketProtocol` answers the handshake itself
and speaks the few frames Tocsin needs: text and binary messages (fragmented or
not), close, ping and pong. The application still sees ASGI messages through
`receive`/`send`, and the `tocsin.wire` extension for pre-encoded writes.

Faults have fixed answers: a malformed handshake gets HTTP 400 (426 for a
version other than 13); an unmasked or otherwise malformed frame closes with
1002, text that is not UTF-8 with 1007, a message above the size limit with
1009, all before any of it reaches the application. Pings go out every
`heartbeat_interval` counted from the last pong; no pong within
`heartbeat_timeout` closes with `4002 heartbeat_timeout`, not counting the time
the gateway's own event loop ran late meanwhile (`LoopLag`): a saturated gateway
reads pongs late, and closing those clients for it turned saturation into a
cascade of reconnects. A socket's one deadline at a time (the next ping, the
pong's, or a close's abort) sits on the process's one timer wheel
(`tocsin.gateway.wheel`), not on a loop timer of its own.

A hostile client holds little: messages read ahead of the application are
bounded in count and bytes (reading pauses past them, so TCP slows the
sender); reading also pauses while the transport's own writes are paused, so
a client that sends pings and never reads its pongs stalls itself; nothing is
queued for the application after the server's close; and a transport that has
not finished closing `close_timeout` after it was asked to is aborted, so a
peer that never reads cannot keep a closed socket (or its session) alive.
One loop turn does a bounded share of each socket's work (`TurnShare`): frames
parsed, applications started. 200 ping floods or 200 reconnects arriving in the
same turn otherwise held the loop for a third of a second.

The framing itself (RFC 6455 parsing and building, no I/O) is `rfc6455.py`;
uvicorn's internals are reached through `tocsin.common.uvicorn_shim`. What
remains here, over 400 lines, is one asyncio protocol and its state machine
(handshake, read-ahead and flow control, heartbeat, closing), kept together
because each part reads the others' state on every callback.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, MutableMapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from tocsin.common.httplimits import HttpLimits, LimitedHttpToolsProtocol
from tocsin.common.uvicorn_shim import UpgradeRequest
from tocsin.gateway import wheel
from tocsin.gateway.handshake import FirstRead
from tocsin.gateway.protocol import CloseCode
from tocsin.gateway.rfc6455 import (
    BINARY,
    NO_STATUS,
    PING,
    PONG,
    TEXT,
    FrameError,
    FrameReader,
    accept_answer,
    close_frame,
    frame,
    handshake_key,
    offered_subprotocols,
    parse_close,
    unmask,
)
from tocsin.gateway.wire import WIRE_EXTENSION, Coalescer, Inbox, Wire, Writable

# The framing's names stay importable from here, where the server that speaks it lives.
__all__ = [
    "FrameError",
    "FrameReader",
    "SocketProtocol",
    "SocketState",
    "SocketTimings",
    "frame",
    "parse_close",
    "unmask",
    "upgrade_protocol",
]

log = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Endpoint = Callable[[Message, Any, Any], Coroutine[Any, Any, None]]

_ABNORMAL = 1006
_SERVICE_RESTART = 1012
# Messages (and their payload bytes) read ahead of the application before reading
# pauses, and where it resumes: a client that floods frames faster than they are
# handled is slowed by TCP, not buffered.
_READ_AHEAD = 64
_READ_AHEAD_BYTES = 1 << 20
_READ_RESUME = 16
_READ_RESUME_BYTES = _READ_AHEAD_BYTES // 4
# Frames one socket's read is parsed in at a time, and all sockets together in one loop
# turn: a read may hold 256 KiB, 2,000 pings, and 200 ping floods arriving in the same
# turn held the loop for a third of a second. Past either bound the rest waits its turn.
_FRAMES_PER_CALL = 64
_FRAMES_PER_TURN = 1024
# Applications (the endpoint: token, admission, session) started per loop turn: 200
# clients refused or timed out at once reconnect at once, and each start costs
# about 0.2 ms.
_STARTS_PER_TURN = 32
# What each frame costs the read budget besides its bytes: parsing a frame costs the
# same whatever its size, and a flood of 131-byte pings cost 8 times the CPU per
# budgeted byte of 60 KiB messages. Dashboards send a few frames a minute.
_FRAME_COST = 1024
# How often the loop's lateness is sampled, the lateness a sample ignores (timer
# granularity), and the lag a waiting pong is forgiven once it exceeds.
_LAG_SAMPLE = 0.1
_LAG_NOISE = 0.005
_LAG_FORGIVEN = 0.25
# What a socket's one deadline on the wheel (`tocsin.gateway.wheel`) stands for.
_PING_DUE = 0
_PONG_DUE = 1
_ABORT_DUE = 2
# The pong's deadline passed: it is judged after the loop has polled its sockets (and
# parsed what it read) once more, by when it was readable, not when the loop got to it.
_PONG_LAST_LOOK = 3
# Every heartbeat ping is the same bytes: built once.
_PING_FRAME = frame(PING)


class LoopLag:
    """The time this process's event loop has run late, summed (seconds).

    One timer samples it every `_LAG_SAMPLE` seconds: how much later than due the
    sample ran is time the loop spent on other work. A socket notes `total` when
    it sends a ping and extends the pong's deadline by what accrued meanwhile.
    `recent` is the lateness of the last samples (each weighs half the one after):
    admission refuses new sockets while it is high.
    """

    __slots__ = ("_due", "_loop", "_thread", "late_pongs_read", "recent", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.recent = 0.0
        # Pongs read only in the look after their deadline (they came while the loop was busy).
        self.late_pongs_read = 0
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0  # the thread `_loop` runs in

    def mark(self) -> float:
        """The lag so far (sampling starts on the first call in a loop)."""
        loop = self._loop
        # The loop held, while it runs in this thread: asking asyncio costs a getpid (3.11).
        if loop is not None and self._thread == threading.get_ident() and loop.is_running():
            return self.total
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._thread = threading.get_ident()
            self._due = loop.time() + _LAG_SAMPLE
            loop.call_at(self._due, self._sample, loop)
        return self.total

    def _sample(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop or loop.is_closed():
            return
        now = loop.time()
        late = now - self._due
        if late > _LAG_NOISE:
            self.total += late
        self.recent = (self.recent + late) / 2
        self._due = now + _LAG_SAMPLE
        loop.call_at(self._due, self._sample, loop)


class TurnShare:
    """Work of one kind shared out per loop turn, first come first served.

    Whoever gets `share()` units now does that much, `spend`s it, and if more is
    left to do, `wait`s in line; each turn serves the line until the turn's
    units are spent. However many sockets flood (or connect) at once, one turn
    does a bounded amount of it, and the rest follows in the turns after,
    between the other sockets' work.
    """

    __slots__ = ("_line", "_loop", "_scheduled", "left", "per_call", "per_turn")

    def __init__(self, per_turn: int, per_call: int) -> None:
        self.per_turn = per_turn
        self.per_call = per_call
        self.left = per_turn
        self._line: deque[Callable[[], None]] = deque()
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def share(self, loop: asyncio.AbstractEventLoop) -> int:
        """Units the caller may do now (0: wait in line); `loop` is the running loop
        (handed in: `asyncio.get_running_loop` costs a getpid per call on 3.11)."""
        if loop is not self._loop:
            self._reset(loop)
        return max(0, min(self.left, self.per_call))

    def spend(self, units: int) -> None:
        """Take `units` off this turn's share (after `share`, in the same turn)."""
        self.left -= units
        # The share is renewed in the turn after it ran half down, not after every
        # turn: a turn still does at most `per_turn` (only a turn's end renews it),
        # and the idle gateway's pongs, a few per turn, schedule no renewal per turn.
        if self.left <= self.per_turn >> 1:
            self._schedule()

    def wait(self, resume: Callable[[], None]) -> None:
        """Call `resume` in a later turn, in line (after `share`, in the same turn)."""
        self._schedule()
        self._line.append(resume)

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        # Another loop (tests run several in one process): nothing carries over.
        self._loop = loop
        self._scheduled, self._line, self.left = False, deque(), self.per_turn

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._scheduled = False
        self.left = self.per_turn
        line = self._line
        for _ in range(len(line)):
            if self.left <= 0:
                self._schedule()
                return
            line.popleft()()


@dataclass(frozen=True, slots=True)
class SocketTimings:
    """The heartbeat and closing times, and the read budget, every socket of a process shares.

    A socket may send `read_rate` bytes a second on average and `read_burst` at once,
    each frame counting `_FRAME_COST` bytes more; past that, reading it pauses until
    its budget refills (0: no budget). Dashboards
    send a few small frames; a flood of frames costs the gateway CPU that its other
    sockets need, so TCP slows the flooder instead.
    """

    ping_interval: float
    pong_timeout: float
    close_timeout: float
    read_rate: float = 0.0
    read_burst: int = 0


class SocketState(enum.Enum):
    """Where a connection stands, from the upgrade request to the application's disconnect."""

    CONNECTING = "connecting"
    """The handshake waits for the application's accept."""
    REFUSED = "refused"
    """An HTTP answer went instead of the upgrade."""
    ABORTED = "aborted"
    """Gone before it was accepted; the application has been told."""
    OPEN = "open"
    CLOSING = "closing"
    """Our close frame went (or the peer's was answered); nothing more is sent."""
    CLOSED = "closed"
    """Closed after it was accepted; the application has been told."""

    # Members are singletons: hashed by identity, every read's `state in _UNACCEPTED`
    # skips `Enum.__hash__` (a Python call per read).
    __hash__ = object.__hash__


_UNACCEPTED = frozenset({SocketState.CONNECTING, SocketState.REFUSED, SocketState.ABORTED})
_TOLD = frozenset({SocketState.ABORTED, SocketState.CLOSED})
_CLOSE_SENT = frozenset(SocketState) - {SocketState.CONNECTING, SocketState.OPEN}
# Each state's successor when our side stops sending, when the application accepts,
# and when the application is told of the disconnect.
_ON_CLOSE_SENT = {
    SocketState.CONNECTING: SocketState.REFUSED,
    SocketState.OPEN: SocketState.CLOSING,
}
_ON_ACCEPT = {
    SocketState.CONNECTING: SocketState.OPEN,
    SocketState.REFUSED: SocketState.CLOSING,
    SocketState.ABORTED: SocketState.CLOSED,
}
_ON_TOLD = {
    SocketState.CONNECTING: SocketState.ABORTED,
    SocketState.REFUSED: SocketState.ABORTED,
    SocketState.OPEN: SocketState.CLOSED,
    SocketState.CLOSING: SocketState.CLOSED,
}


class SocketProtocol(asyncio.Protocol):
    """One WebSocket connection, from the accepted handshake to the closed transport."""

    coalescer = Coalescer()
    lag = LoopLag()
    # Every socket's one deadline (heartbeat or close) sits on the process's one wheel.
    deadlines = wheel.deadlines
    # Frames parsed (see `_FRAMES_PER_CALL`) and applications started per loop turn.
    frames = TurnShare(_FRAMES_PER_TURN, _FRAMES_PER_CALL)
    starts = TurnShare(_STARTS_PER_TURN, 1)

    __slots__ = (
        "_allowance",
        "_allowance_at",
        "_closed_code",
        "_due",
        "_input_waits",
        "_key",
        "_lag_mark",
        "_loop",
        "_pending",
        "_reader",
        "_reading_paused",
        "_response",
        "_server_state",
        "_throttle",
        "_timings",
        "close_sent",
        "queue",
        "state",
        "transport",
        "wire",
        "writable",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        key: bytes,
        server_state: Any,
        timings: SocketTimings,
        max_message: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.transport = transport
        # The running loop, held: asking for it costs a getpid per call on 3.11.
        self._loop = loop
        self._key = key
        self._server_state = server_state
        self._timings = timings
        self._reader = FrameReader(max_message)
        self.queue = Inbox(loop)
        self.writable = Writable()
        self.wire = Wire(self, self.coalescer)
        self.state = SocketState.CONNECTING
        # The state's "our close went" as a plain attribute: `Wire.write` reads it per frame.
        self.close_sent = False
        self._reading_paused = False
        # Bytes read and not yet parsed wait for a turn (see `TurnShare`).
        self._input_waits = False
        # The close code the peer sent, once it sent one.
        self._closed_code: int | None = None
        # Bytes that arrived before the application accepted.
        self._pending = b""
        # A refusal's HTTP status and headers, between its two ASGI messages.
        self._response: tuple[int, list[str]] | None = None
        # What the socket's deadline on the wheel is, while it has one: the next ping,
        # the wait for its pong, or the abort of a close the peer does not complete.
        self._due = _PING_DUE
        # The loop's lag when the last ping left (see `LoopLag`).
        self._lag_mark = 0.0
        # The read budget (see `SocketTimings`), and the timer that ends a pause for it.
        self._allowance = float(timings.read_burst)
        self._allowance_at = 0.0
        self._throttle: asyncio.TimerHandle | None = None

    def _enter(self, state: SocketState) -> None:
        self.state = state
        self.close_sent = state in _CLOSE_SENT

    def _stop_sending(self) -> None:
        self._enter(_ON_CLOSE_SENT.get(self.state, self.state))

    def start(self, endpoint: Endpoint, scope: Message) -> None:
        """Run the application for this connection (the scope's extensions are filled here),
        in this loop turn or, past the turn's share, a later one."""
        starts = self.starts
        if starts.share(self._loop):
            starts.spend(1)
            self._start(endpoint, scope)
        else:
            starts.wait(functools.partial(self._start, endpoint, scope))

    def _start(self, endpoint: Endpoint, scope: Message) -> None:
        if self.transport.is_closing():
            return  # gone while it waited for its turn
        self._server_state.connections.add(self)
        scope["extensions"] = {"websocket.http.response": {}, WIRE_EXTENSION: {"wire": self.wire}}
        self.queue.put_nowait({"type": "websocket.connect"})
        task = self._loop.create_task(endpoint(scope, self.receive, self.send))
        # uvicorn's set of running tasks also keeps this one referenced until it ends.
        self._server_state.tasks.add(task)
        task.add_done_callback(self._application_done)

    # -- asyncio.Protocol ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.state in _UNACCEPTED:
            # A client must wait for the handshake's answer before it sends (RFC 6455
            # 4.1); one that sends more than a message meanwhile is not a client.
            self._pending += data
            if len(self._pending) > self._reader.max_size + 14:
                self._stop_sending()
                self.transport.close()
            return
        if self.close_sent and self._closed_code is not None:
            return
        if self._timings.read_rate:
            self._spend(len(data))
        self._take_input(data)

    def _take_input(self, data: bytes) -> None:
        """Parse what this turn's share allows; the rest waits for a later turn."""
        self._input_waits = False
        if self.transport.is_closing():
            return
        turns = self.frames
        try:
            messages = self._reader.feed(data, turns.share(self._loop))
        except FrameError as exc:
            self._fail(exc.code, exc.reason)
            return
        frames = self._reader.frames
        turns.spend(frames)
        if frames and self._timings.read_rate:
            self._spend(frames * _FRAME_COST)
        if self._reader.more:
            self._input_waits = True
            self._pause_reading()
            turns.wait(self._continue_input)
        queue = self.queue
        # Pongs to the pings of one read leave in one write (a ping flood costs one send).
        pongs: list[bytes] = []
        for opcode, payload in messages:
            if opcode <= BINARY:
                if self.close_sent:
                    # After our close only the peer's close matters: nothing more is queued.
                    continue
                if opcode == TEXT:
                    try:
                        text = payload.decode()
                    except UnicodeDecodeError:
                        self._fail(1007, "text frames must be UTF-8")
                        return
                    queue.put_nowait({"type": "websocket.receive", "text": text}, len(payload))
                else:
                    queue.put_nowait({"type": "websocket.receive", "bytes": payload}, len(payload))
            elif opcode == PING:
                if not self.close_sent:
                    pongs.append(frame(PONG, payload))
            elif opcode == PONG:
                self._pong_received()
            else:
                if pongs:
                    self._write_now(b"".join(pongs))
                self._close_received(payload)
                return
        if pongs:
            self._write_now(b"".join(pongs))
        if queue.qsize() > _READ_AHEAD or queue.size > _READ_AHEAD_BYTES:
            self._pause_reading()
        elif self._reading_paused and not self._input_waits:
            self._resume_reading()

    def _continue_input(self) -> None:
        self._take_input(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_state.connections.discard(self)
        self.deadlines.cancel(self)
        if self._throttle is not None:
            self._throttle.cancel()
            self._throttle = None
        self._stop_sending()
        self._disconnect(self._closed_code or _ABNORMAL)
        # Whoever waits to write learns of the loss from the send that follows.
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()
        # A peer that does not read what it asked for (pongs, above all) is not read either.
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writable.set()
        self._resume_reading()

    def _spend(self, size: int) -> None:
        """Take `size` bytes from the read budget; pause reading while it is overdrawn."""
        timings = self._timings
        now = time.monotonic()
        allowance = min(
            float(timings.read_burst),
            self._allowance + (now - self._allowance_at) * timings.read_rate,
        )
        self._allowance = allowance - size
        self._allowance_at = now
        if self._allowance < 0 and self._throttle is None:
            self._pause_reading()
            self._throttle = self._loop.call_later(
                -self._allowance / timings.read_rate, self._unthrottle
            )

    def _unthrottle(self) -> None:
        self._throttle = None
        self._resume_reading()

    def _write_now(self, data: bytes) -> None:
        """Write a control frame at once, after what the wire holds (the handshake's
        answer, perhaps)."""
        self.wire.flush()
        self.transport.write(data)

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self.transport.is_closing():
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        """Read again once the application has caught up and the peer takes our writes."""
        queue = self.queue
        if (
            self._reading_paused
            and self._throttle is None
            and not self._input_waits
            and self.writable.ready
            and queue.qsize() <= _READ_RESUME
            and queue.size <= _READ_RESUME_BYTES
            and not self.transport.is_closing()
        ):
            self._reading_paused = False
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """uvicorn's exit: what a drain left open closes as a service restart."""
        if not self.close_sent:
            self._fail(_SERVICE_RESTART, "service restart")

    # -- the application's side (ASGI) ----------------------------------------------

    async def receive(self) -> Message:
        queue = self.queue
        while queue.empty():
            await queue.arrival()
        message: Message = queue.pop()
        if self._reading_paused:
            self._resume_reading()
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.state in _UNACCEPTED:
            self._send_before_accept(kind, message)
            return
        if self.close_sent:
            raise ConnectionResetError("the WebSocket is closed")
        self.wire.flush()  # what the wire took earlier goes first
        if kind == "websocket.send":
            text = message.get("text")
            if text is not None:
                self.transport.write(frame(TEXT, text.encode()))
            else:
                self.transport.write(frame(BINARY, message.get("bytes") or b""))
            if not self.writable.ready:
                await self.writable.wait()
        elif kind == "websocket.close":
            code = int(message.get("code") or 1000)
            self._close(code, str(message.get("reason") or ""))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an open WebSocket")

    def _send_before_accept(self, kind: str, message: Message) -> None:
        if kind == "websocket.accept":
            self._accept(message.get("subprotocol"))
        elif kind == "websocket.close":
            respond(self.transport, 403)
            self._stop_sending()
        elif kind == "websocket.http.response.start":
            self._response = (
                int(message["status"]),
                [f"{name.decode()}: {value.decode()}" for name, value in message["headers"]],
            )
        elif kind == "websocket.http.response.body" and self._response is not None:
            status, headers = self._response
            respond(self.transport, status, message.get("body", b""), *headers)
            self._stop_sending()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} before the handshake")

    def _accept(self, subprotocol: str | None) -> None:
        # Through the wire: the answer and the application's first frame (the welcome)
        # leave in one write, one send(2) fewer per connect.
        answer = accept_answer(self._key, subprotocol)
        if not self.wire.write(answer):
            self.transport.write(answer)
        self._enter(_ON_ACCEPT[self.state])
        self._key = b""
        self._schedule_ping()
        pending, self._pending = self._pending, b""
        if pending:
            self.wire.flush()
            self.data_received(pending)

    def _application_done(self, task: asyncio.Task[None]) -> None:
        self._server_state.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("the WebSocket application failed", exc_info=task.exception())
            if self.state in _UNACCEPTED:
                respond(self.transport, 500)
                self._stop_sending()
            else:
                self._fail(1011, "internal error")
            return
        if self.state is SocketState.CONNECTING:
            respond(self.transport, 403)
            self._stop_sending()
        elif not self.close_sent:
            self._close(1000, "")

    # -- closing --------------------------------------------------------------------

    def _close(self, code: int, reason: str) -> None:
        """Send our close; the transport closes when the peer answers, or after a while."""
        self.wire.flush()
        self.transport.write(close_frame(code, reason))
        self._stop_sending()
        if self._closed_code is not None:
            self._end()
        else:
            # A peer that never answers (or never reads) must not hold the socket open.
            self._due = _ABORT_DUE
            self.deadlines.after(self, self._timings.close_timeout)

    def _close_received(self, payload: bytes) -> None:
        try:
            code, _reason = parse_close(payload)
        except FrameError as exc:
            self._fail(exc.code, exc.reason)
            return
        self._closed_code = code
        if not self.close_sent:
            self.wire.flush()
            self.transport.write(close_frame(code if code != NO_STATUS else 1000))
            self._stop_sending()
        self._disconnect(code)
        self._end()

    def _fail(self, code: int, reason: str) -> None:
        """Close at once with `code`, telling the application why."""
        sending = not self.close_sent
        self._disconnect(code, reason)
        if sending:
            self.wire.flush()
            self.transport.write(close_frame(code, reason))
            self._stop_sending()
        self._end()

    def _end(self) -> None:
        """Close the transport; abort it if its buffer has not drained after `close_timeout`
        (a peer that never reads would otherwise keep it, and its memory, forever)."""
        self.transport.close()
        self._due = _ABORT_DUE
        self.deadlines.after(self, self._timings.close_timeout)

    def _disconnect(self, code: int, reason: str = "") -> None:
        if self.state not in _TOLD:
            self._enter(_ON_TOLD[self.state])
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})

    # -- heartbeat and deadlines ------------------------------------------------------

    def expire(self, lateness: float) -> None:
        """The socket's deadline on the wheel came, `lateness` seconds after its slot."""
        due = self._due
        if due == _PING_DUE:
            self._send_ping()
        elif due in (_PONG_DUE, _PONG_LAST_LOOK):
            self._pong_missed(lateness)
        else:
            self.transport.abort()

    def _schedule_ping(self) -> None:
        self._due = _PING_DUE
        self.deadlines.after(self, self._timings.ping_interval)

    def _send_ping(self) -> None:
        if self.close_sent:
            return
        self._write_now(_PING_FRAME)
        self._lag_mark = self.lag.mark()
        self._due = _PONG_DUE
        self.deadlines.after(self, self._timings.pong_timeout)

    def _pong_received(self) -> None:
        if self.close_sent:
            return
        if self._due == _PONG_LAST_LOOK:
            self.lag.late_pongs_read += 1
        self._schedule_ping()

    def _pong_missed(self, lateness: float) -> None:
        # The gateway's own lateness: the wheel's (after a stall, due deadlines come
        # before the pongs that arrived meanwhile are read), or the loop's since the ping.
        lag = self.lag.mark()
        owed = max(lateness, lag - self._lag_mark)
        if owed > _LAG_FORGIVEN:
            self._lag_mark = lag
            self._due = _PONG_DUE
            self.deadlines.after(self, owed)
            return
        if self._due == _PONG_DUE or self._input_waits:
            # A pong that came while the loop was busy (less than the lag forgiven) is
            # still in the kernel, or read and waiting for its turn to be parsed: look
            # once more a slot later, after the loop has polled and parsed it.
            self._due = _PONG_LAST_LOOK
            self.deadlines.after(self, wheel.RESOLUTION)
            return
        code = CloseCode.HEARTBEAT_TIMEOUT
        # Told before the transport's own loss, so the session learns why it went.
        self._fail(int(code), code.reason)


_PLAIN_TEXT = "content-type: text/plain; charset=utf-8"


def respond(transport: asyncio.Transport, status: int, body: bytes = b"", *headers: str) -> None:
    """An HTTP answer instead of the upgrade; the connection closes after it."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *headers]
    lines.append(f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    transport.write("\r\n".join(lines).encode() + body)
    transport.close()


def upgrade_protocol(
    endpoint: Endpoint,
    path: str,
    timings: SocketTimings,
    max_message: int,
    limits: HttpLimits | None = None,
) -> type[asyncio.Protocol]:
    """The server's protocol: a plain upgrade to `path` read by hand (`FirstRead`), anything
    else by uvicorn's httptools protocol with Tocsin's HTTP `limits`; both answer upgrades
    to `path` with a `SocketProtocol`."""
    path_bytes = path.encode()

    def checked(request: UpgradeRequest) -> tuple[bytes | None, int, str, tuple[str, ...]]:
        """The request's key, or None with the HTTP refusal (status, reason, headers)."""
        if request.target != path_bytes:
            return None, 404, "no WebSocket endpoint here", ()
        if request.method != "GET":
            return None, 405, "the upgrade must be a GET", ()
        key, refusal = handshake_key(request.headers)
        if key is None:
            if refusal == "426":
                return None, 426, "only WebSocket version 13", ("sec-websocket-version: 13",)
            return None, 400, refusal, ()
        return key, 101, "", ()

    def start(socket: SocketProtocol, request: UpgradeRequest) -> None:
        headers = request.headers
        socket.start(
            endpoint,
            {
                "type": "websocket",
                "path": path,
                "query_string": request.query,
                "headers": headers,
                "subprotocols": offered_subprotocols(headers),
            },
        )

    def open_plain(
        transport: asyncio.Transport,
        state: Any,
        request: UpgradeRequest,
        loop: asyncio.AbstractEventLoop,
    ) -> bool:
        key = checked(request)[0]
        if key is None:
            return False  # refused: the HTTP protocol answers it
        socket = SocketProtocol(transport, key, state, timings, max_message, loop)
        transport.set_protocol(socket)
        start(socket, request)
        return True

    class UpgradeProtocol(LimitedHttpToolsProtocol):
        def handle_websocket_upgrade(self) -> None:
            request = self.upgrade_request()
            key, status, reason, headers = checked(request)
            if key is None:
                respond(self.release_parser(), status, reason.encode(), *headers, _PLAIN_TEXT)
                return
            loop = self.loop
            socket = self.hand_over(
                lambda transport, state: SocketProtocol(
                    transport, key, state, timings, max_message, loop
                )
            )
            start(socket, request)

    http = UpgradeProtocol.with_limits(limits) if limits is not None else UpgradeProtocol
    return FirstRead.serving(http, open_plain)
