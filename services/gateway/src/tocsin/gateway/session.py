"""`Session`: one authenticated socket's protocol state.

A session dispatches the client's frames (subscribe, unsubscribe, refresh,
ping), keeps a `Position` per subscribed channel and runs its recoveries, and
writes through the `Outbox` it extends; its `TokenLease` closes it when the
token runs out. Frames reach it from the hub through `deliver`, which never
awaits.

A little over 400 lines, on purpose: it is one class, the protocol's dispatch
and the recovery that reads the stream for it, which share the subscription
state; the pieces that stand alone (outbox, position, lease) live beside it.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
import redis.asyncio as redis_async

from tocsin.common.auth import Claims
from tocsin.common.errors import InvalidInputError
from tocsin.common.events import CHANNEL_PATTERN
from tocsin.common.metrics import health_signals
from tocsin.gateway.frames import Frame, control_frame
from tocsin.gateway.hub import SubscribeTimeoutError
from tocsin.gateway.lease import TokenLease
from tocsin.gateway.node import Node
from tocsin.gateway.outbox import Outbox
from tocsin.gateway.position import Position, Step
from tocsin.gateway.protocol import CloseCode, ErrorCode, encode, error_frame
from tocsin.gateway.wire import WIRE_EXTENSION, Wire

__all__ = ["Session", "SessionState", "wire_of"]

log = logging.getLogger(__name__)

# Connection ids: unique in the process after a random prefix, unique across processes
# by it; a uuid4 per connect cost a urandom call and a UUID object.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count()

# Closes that say nothing about Tocsin's health (see the health score's disconnect rate).
_ORDINARY_DISCONNECTS = frozenset({"client_closed", "server_restart", "token_expired"})

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]

_decoder = msgspec.json.Decoder(dict[str, Any])
_REDIS_ERRORS = (redis_async.RedisError, OSError)


def wire_of(scope: MutableMapping[str, Any]) -> Wire | None:
    """The server's direct frame writer for this connection, when it offers one."""
    extension = scope.get("extensions", {}).get(WIRE_EXTENSION)
    return extension.get("wire") if extension else None


class ProtocolViolationError(InvalidInputError):
    """The client sent something the protocol does not allow; the socket is closed."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class SessionState(enum.Enum):
    """Where a session's socket stands."""

    OPEN = "open"
    CLOSING = "closing"
    """A close is decided (`close_code`); frames are no longer taken."""
    ABANDONED = "abandoned"
    """The close did not drain in time: serving the socket was given up."""
    CLOSED = "closed"


# Read per delivered frame: a module global is found in a few ns, an enum member
# (`SessionState.OPEN`, a class attribute lookup through EnumType) in ~70 ns on 3.11.
_OPEN = SessionState.OPEN


class Session(Outbox):
    """One socket: its subscriptions, outbound queue, writer and token lease."""

    def __init__(
        self, node: Node, claims: Claims, send: Send, receive: Receive, wire: Wire | None = None
    ) -> None:
        settings = node.settings
        super().__init__(send, wire, settings.outbound_queue_frames, settings.outbound_queue_bytes)
        self.node = node
        self._settings = settings
        self.lease = TokenLease(
            claims,
            node.verifier,
            self,
            warning=settings.token_warning,
            grace=settings.token_grace,
        )
        self.id = f"{_ID_PREFIX}{next(_ids):016x}"
        self.positions: dict[str, Position] = {}
        self._receive = receive
        self._serving: asyncio.Task[Any] | None = None
        self._closer: asyncio.Task[None] | None = None
        # Recovery tasks, made only when a subscription recovers (an empty set is 216 bytes).
        self._tasks: set[asyncio.Task[None]] | None = None
        self.state = SessionState.OPEN
        self.close_code: CloseCode | None = None
        self.delivered = 0

    @property
    def claims(self) -> Claims:
        return self.lease.claims

    # -- delivery (called by the hub; never awaits) ---------------------------

    def deliver(self, frame: Frame) -> None:
        position = self.positions.get(frame.channel)
        if position is None or self.state is not _OPEN:
            return
        if (
            frame.offset == position.offset + 1
            and position.buffer is None
            and frame.epoch == position.epoch
        ):
            # The hot path, once per socket per event: the in-order case of
            # `Position.live`, inlined so fan-out costs no call before `push`.
            position.offset = frame.offset
            self.delivered += 1
            self.push(frame)
            return
        step = position.live(frame)
        if step is Step.BUFFERED:
            if len(position.buffer or ()) > self._max_frames:
                self.close(CloseCode.SLOW_CONSUMER)
        elif step is Step.GAP:
            # A hole in the live flow: fetch it from the stream first.
            self._start_recovery(frame.channel, initial=False)
        else:
            self._take(frame, step)

    def resume(self, channel: str) -> None:
        position = self.positions.get(channel)
        if position is None or self.state is not _OPEN or not position.recover():
            return
        self._start_recovery(channel, initial=False)

    def _take(self, frame: Frame, step: Step) -> None:
        """Send `frame` as the position decided (after announcing a new epoch)."""
        if step is Step.SKIP:
            return
        if step is Step.NEW_EPOCH:
            # The stream was lost and restarted under a new epoch.
            self._announce(frame.channel, frame.epoch, frame.offset - 1, recovered=False)
        self.delivered += 1
        if self.state is _OPEN:
            self.push(frame)

    def send_control(self, text: str) -> None:
        if self.state is _OPEN:
            self.push(control_frame(text))

    def overflow(self) -> None:
        self.close(CloseCode.SLOW_CONSUMER)

    def _announce(self, channel: str, epoch: str, offset: int, *, recovered: bool) -> None:
        self.node.stats.recoveries["true" if recovered else "false"] += 1
        self.send_control(
            encode(
                {
                    "type": "subscribed",
                    "channel": channel,
                    "offset": offset,
                    "epoch": epoch,
                    "recovered": recovered,
                }
            )
        )

    # -- closing ------------------------------------------------------------------

    def close(self, code: CloseCode) -> None:
        """Ask for the socket to close with `code`; queued frames are sent first,
        except for a slow consumer, whose queue is dropped at once."""
        if self.state is not _OPEN:
            return
        self.state = SessionState.CLOSING
        self.close_code = code
        # Counted when decided, not when done: a stalled socket may take long to close.
        self._count_disconnect(code.reason)
        if code is CloseCode.SLOW_CONSUMER:
            self.node.stats.dropped["slow_consumer"] += self.drop()
            for position in self.positions.values():
                position.drop_buffer()
        self._closer = asyncio.create_task(self._close_socket(code))

    async def _close_socket(self, code: CloseCode) -> None:
        timeout = self._settings.close_timeout
        writer = self.writer
        if writer is not None:
            # Let the writer flush what precedes the close (an error frame, say).
            await asyncio.wait({writer}, timeout=timeout)
        try:
            # uvicorn answers the reader with a disconnect once the close is sent.
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": int(code), "reason": code.reason}),
                timeout,
            )
        except Exception:
            # The socket does not drain (or is gone): stop serving it regardless.
            serving = self._serving
            if serving is not None and not serving.done():
                self.state = SessionState.ABANDONED
                serving.cancel()

    # -- the socket's life ----------------------------------------------------------

    async def run(self) -> None:
        """Serve the socket until either side closes it."""
        node = self.node
        node.sessions.add(self)
        node.stats.connections += 1
        # Reading happens in this task itself: one task per socket, plus a writer
        # only while a backlog exists and a closer only while closing.
        self._serving = asyncio.current_task()
        self.lease.start()
        self.send_control(self._welcome())
        try:
            await self._read_forever()
        except asyncio.CancelledError:
            if self.state is not SessionState.ABANDONED or self._serving is None:
                raise
            self._serving.uncancel()
        finally:
            self.drop()
            for task in (self.writer, self._closer, *(self._tasks or ())):
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
            self.lease.cancel()
            for channel in list(self.positions):
                await self._leave(channel)
            node.forget(self)
            node.stats.deliveries += self.delivered
            node.stats.connections -= 1
            if self.close_code is None:
                self._count_disconnect("client_closed")
            self.state = SessionState.CLOSED

    def _count_disconnect(self, reason: str) -> None:
        self.node.stats.disconnects[reason] += 1
        if reason not in _ORDINARY_DISCONNECTS:
            health_signals.add("ws_disconnects_abnormal")

    def _welcome(self) -> str:
        settings = self._settings
        return encode(
            {
                "type": "welcome",
                "protocol": "tocsin.v1",
                "connection_id": self.id,
                "server_time": time.time(),
                "subject": self.claims.subject,
                "expires_at": self.claims.expires_at,
                "heartbeat_interval": settings.heartbeat_interval,
                "heartbeat_timeout": settings.heartbeat_timeout,
                "limits": {
                    "max_subscriptions": settings.max_subscriptions,
                    "max_frame_bytes": settings.max_frame_bytes,
                    "outbound_queue_frames": settings.outbound_queue_frames,
                    "outbound_queue_bytes": settings.outbound_queue_bytes,
                },
            }
        )

    async def _read_forever(self) -> None:
        limit = self._settings.max_frame_bytes
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                if message.get("code") == CloseCode.HEARTBEAT_TIMEOUT and self.state is _OPEN:
                    # The server protocol closed it for a missed pong (see websocket.py).
                    self.state = SessionState.CLOSING
                    self.close_code = CloseCode.HEARTBEAT_TIMEOUT
                    self._count_disconnect(CloseCode.HEARTBEAT_TIMEOUT.reason)
                return
            if self.state is not _OPEN:
                continue  # closing: the disconnect is on its way
            raw = message.get("text")
            data = raw.encode() if raw is not None else message.get("bytes") or b""
            try:
                if len(data) > limit:
                    self.node.stats.limit_breaches["frame_size"] += 1
                    raise ProtocolViolationError(
                        CloseCode.FRAME_TOO_LARGE, f"frames are limited to {limit} bytes"
                    )
                await self._handle(data)
            except ProtocolViolationError as exc:
                self.send_control(error_frame(ErrorCode.BAD_REQUEST, str(exc)))
                self.close(exc.code)

    async def _handle(self, data: bytes) -> None:
        try:
            request = _decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise ProtocolViolationError(
                CloseCode.PROTOCOL_VIOLATION, "frames are JSON objects"
            ) from None
        kind = request.get("type")
        if kind == "subscribe":
            await self._subscribe(request)
        elif kind == "unsubscribe":
            channel = str(request.get("channel", ""))
            if channel not in self.positions:
                self.send_control(
                    error_frame(ErrorCode.NOT_SUBSCRIBED, "not subscribed", channel=channel)
                )
                return
            await self._leave(channel)
            self.send_control(encode({"type": "unsubscribed", "channel": channel}))
        elif kind == "refresh":
            self.send_control(self.lease.refresh(str(request.get("token", ""))))
        elif kind == "ping":
            self.send_control(encode({"type": "pong", "server_time": time.time()}))
        else:
            raise ProtocolViolationError(
                CloseCode.PROTOCOL_VIOLATION, f"unknown frame type {kind!r}"
            )

    # -- subscriptions ------------------------------------------------------------

    async def _subscribe(self, request: dict[str, Any]) -> None:
        channel = request.get("channel")
        since = request.get("since")
        epoch = request.get("epoch", "")
        if not isinstance(channel, str) or not CHANNEL_PATTERN.match(channel):
            self.send_control(error_frame(ErrorCode.BAD_CHANNEL, f"invalid channel {channel!r}"))
            return
        if since is not None and (not isinstance(since, int) or since < 0):
            self.send_control(
                error_frame(ErrorCode.BAD_REQUEST, "since is an offset >= 0", channel=channel)
            )
            return
        if not self.lease.grant.allows(channel):
            self.send_control(
                error_frame(ErrorCode.FORBIDDEN, "the token does not grant it", channel=channel)
            )
            return
        if channel in self.positions:
            self.send_control(
                error_frame(ErrorCode.ALREADY_SUBSCRIBED, "already subscribed", channel=channel)
            )
            return
        limit = self._settings.max_subscriptions
        if len(self.positions) >= limit:
            self.node.stats.limit_breaches["subscriptions"] += 1
            self.send_control(
                error_frame(
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                    f"at most {limit} subscriptions",
                    channel=channel,
                )
            )
            return
        self.positions[channel] = Position()
        self.node.stats.subscriptions += 1
        try:
            await self.node.hub.join(channel, self)
        except SubscribeTimeoutError:
            self.close(CloseCode.BACKEND_UNAVAILABLE)
            return
        await self._recover(channel, since, str(epoch or ""), initial=True)

    async def _leave(self, channel: str) -> None:
        if self.positions.pop(channel, None) is not None:
            self.node.stats.subscriptions -= 1
            await self.node.hub.leave(channel, self)

    def _start_recovery(self, channel: str, *, initial: bool) -> None:
        position = self.positions[channel]
        task = asyncio.create_task(
            self._recover(channel, position.offset, position.epoch, initial=initial)
        )
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, channel: str, since: int | None, epoch: str, *, initial: bool) -> None:
        """Replay what `since` missed, then merge the buffered live frames.

        The reply to a subscribe is `subscribed` with `offset` = the offset after
        which events follow; `recovered` is false when the missed events are gone
        (trimmed, or a new epoch) and the client must reload its state.
        """
        position = self.positions.get(channel)
        if position is None:
            return
        node = self.node
        batch = self._settings.history_batch
        try:
            async with node.recovery_slots:
                head = await node.hub.head(channel)
                recovered = True
                start = head.offset
                history: list[Frame] = []
                if since is not None:
                    if (epoch and head.epoch and epoch != head.epoch) or since > head.offset:
                        recovered = False
                    elif since < head.offset:
                        history = await node.log.read(channel, since, batch, head)
                        if history and history[0].offset == since + 1:
                            start = since
                        else:
                            recovered = False
                    else:
                        start = since
                if initial or not recovered:
                    self._announce(channel, head.epoch, start, recovered=recovered)
                position.restart_at(head.epoch, start)
                if not recovered:
                    history = []
                while history:
                    for frame in history:
                        self._take(frame, position.merge(frame))
                    if len(history) < batch or self.state is not _OPEN:
                        break
                    await self.room()
                    history = await node.log.read(channel, position.offset, batch)
        except _REDIS_ERRORS as exc:
            log.warning("recovery of %s failed: %s", channel, exc)
            self.close(CloseCode.BACKEND_UNAVAILABLE)
            return
        for frame in position.finish():
            self._take(frame, position.merge(frame))
