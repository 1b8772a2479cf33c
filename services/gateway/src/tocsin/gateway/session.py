"""`Session`: one authenticated socket's protocol state.

A session owns a bounded outbound queue drained by one writer task, the
position (epoch, offset) of each subscribed channel, and its token's expiry
timers. Frames reach it from the hub through `deliver`, which never awaits:
a queue that outgrows its bounds closes the socket as a slow consumer.

A subscription that is recovering (a `since` on subscribe, or a catch-up after
a pub/sub reconnect) buffers live frames while the stream is read, then merges
them by offset, so the client sees every offset once, in order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
import redis.asyncio as redis_async

from tocsin.common.auth import Claims, TokenError
from tocsin.common.events import CHANNEL_PATTERN
from tocsin.common.metrics import health_signals
from tocsin.gateway.access import ChannelGrant
from tocsin.gateway.frames import Frame, control_frame
from tocsin.gateway.hub import SubscribeTimeoutError
from tocsin.gateway.metrics import e2e_latency, publish_to_send
from tocsin.gateway.node import Node
from tocsin.gateway.protocol import CloseCode, ErrorCode, encode, error_frame
from tocsin.gateway.wire import WIRE_EXTENSION, Wire

__all__ = ["Position", "Session", "wire_of"]

log = logging.getLogger(__name__)

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


def _slim(claims: Claims) -> Claims:
    """The claims a session keeps for its whole life, without the raw token payload."""
    return Claims(claims.subject, claims.scopes, claims.channels, claims.expires_at, _NO_RAW)


# Shared by every session's slim claims (Claims.raw is never mutated).
_NO_RAW: dict[str, Any] = {}
# Connection ids: unique in the process after a random prefix, unique across processes
# by it; a uuid4 per connect cost a urandom call and a UUID object.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count()


class ProtocolViolationError(Exception):
    """The client sent something the protocol does not allow; the socket is closed."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Position:
    """Where a subscription stands; `buffer` holds live frames while it recovers."""

    __slots__ = ("buffer", "epoch", "offset")

    def __init__(self) -> None:
        self.epoch = ""
        self.offset = 0
        self.buffer: list[Frame] | None = []


class Session:
    """One socket: its subscriptions, outbound queue, writer and token lifetime."""

    def __init__(
        self, node: Node, claims: Claims, send: Send, receive: Receive, wire: Wire | None = None
    ) -> None:
        self.node = node
        self.claims = _slim(claims)
        self.grant = ChannelGrant(claims.channels)
        self.id = f"{_ID_PREFIX}{next(_ids):016x}"
        self.positions: dict[str, Position] = {}
        self._send = send
        self._receive = receive
        self._wire = wire
        settings = node.settings
        self._max_frames = settings.outbound_queue_frames
        self._max_bytes = settings.outbound_queue_bytes
        # A list, not a deque: it is empty nearly always, and an empty deque
        # costs 760 bytes per socket against 56.
        self._queue: list[Frame] = []
        self._queued_bytes = 0
        self._serving: asyncio.Task[Any] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._abandoned = False
        self._room: asyncio.Future[None] | None = None
        self._sending = False
        self._writer: asyncio.Task[None] | None = None
        # Recovery tasks, made only when a subscription recovers (an empty set is 216 bytes).
        self._tasks: set[asyncio.Task[None]] | None = None
        # One timer at a time: the expiry warning, which then arms the close.
        self._expiry_timer: asyncio.TimerHandle | None = None
        self.close_code: CloseCode | None = None
        self.delivered = 0

    @property
    def queued_frames(self) -> int:
        return len(self._queue)

    # -- delivery (called by the hub; never awaits) ---------------------------

    def deliver(self, frame: Frame) -> None:
        position = self.positions.get(frame.channel)
        if position is None or self.close_code is not None:
            return
        if (
            frame.offset == position.offset + 1
            and position.buffer is None
            and frame.epoch == position.epoch
        ):
            # The hot path, once per socket per event: the next offset, written
            # straight to the socket when nothing is waiting before it.
            position.offset = frame.offset
            self.delivered += 1
            wire = self._wire
            if (
                wire is not None
                and not self._queue
                and not self._sending
                and wire.write(frame.wire)
            ):
                if frame.unobserved:
                    self._observe(frame)
            else:
                self._enqueue(frame)
            return
        buffer = position.buffer
        if buffer is not None:
            buffer.append(frame)
            if len(buffer) > self._max_frames:
                self.close(CloseCode.SLOW_CONSUMER)
            return
        if frame.epoch == position.epoch:
            if frame.offset <= position.offset:
                return
            if frame.offset > position.offset + 1 and position.epoch:
                # A hole in the live flow: fetch it from the stream first.
                position.buffer = [frame]
                self._start_recovery(frame.channel, initial=False)
                return
        self._accept(position, frame)

    def resume(self, channel: str) -> None:
        position = self.positions.get(channel)
        if position is None or position.buffer is not None or self.close_code is not None:
            return
        position.buffer = []
        self._start_recovery(channel, initial=False)

    def _accept(self, position: Position, frame: Frame) -> None:
        """Queue `frame` if it is new to this subscription (the merge by offset)."""
        if frame.epoch != position.epoch:
            if position.epoch:
                # The stream was lost and restarted under a new epoch.
                self._announce(frame.channel, frame.epoch, frame.offset - 1, recovered=False)
            position.epoch = frame.epoch
        elif frame.offset <= position.offset:
            return
        position.offset = frame.offset
        self.delivered += 1
        self._enqueue(frame)

    def _enqueue(self, frame: Frame) -> None:
        if self.close_code is not None:
            return
        wire = self._wire
        if wire is not None and not self._queue and not self._sending and wire.write(frame.wire):
            # The common case: nothing waiting, the socket takes it now; no task involved.
            if frame.unobserved:
                self._observe(frame)
            return
        if (
            len(self._queue) >= self._max_frames
            or self._queued_bytes + frame.size > self._max_bytes
        ):
            self.close(CloseCode.SLOW_CONSUMER)
            return
        self._queue.append(frame)
        self._queued_bytes += frame.size
        if self._writer is None:
            # A writer task exists only while there is a backlog to work off.
            self._writer = asyncio.create_task(self._drain())

    def send_control(self, text: str) -> None:
        self._enqueue(control_frame(text))

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
        if self.close_code is not None:
            return
        self.close_code = code
        stats = self.node.stats
        # Counted when decided, not when done: a stalled socket may take long to close.
        self._count_disconnect(code.reason)
        if code is CloseCode.SLOW_CONSUMER:
            stats.dropped["slow_consumer"] += len(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
            for position in self.positions.values():
                position.buffer = None
            if self._sending and self._writer is not None:
                # The writer waits on a socket that does not drain; stop it here.
                self._writer.cancel()
        self._closer = asyncio.create_task(self._close_socket(code))

    async def _close_socket(self, code: CloseCode) -> None:
        timeout = self.node.settings.close_timeout
        writer = self._writer
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
                self._abandoned = True
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
        self._schedule_expiry()
        self.send_control(self._welcome())
        try:
            await self._read_forever()
        except asyncio.CancelledError:
            if not self._abandoned or self._serving is None:
                raise
            self._serving.uncancel()
        finally:
            self._queue.clear()
            for task in (self._writer, self._closer, *(self._tasks or ())):
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
            if self._expiry_timer is not None:
                self._expiry_timer.cancel()
            for channel in list(self.positions):
                await self._leave(channel)
            node.forget(self)
            node.stats.deliveries += self.delivered
            node.stats.connections -= 1
            if self.close_code is None:
                self._count_disconnect("client_closed")

    def _count_disconnect(self, reason: str) -> None:
        self.node.stats.disconnects[reason] += 1
        if reason not in _ORDINARY_DISCONNECTS:
            health_signals.add("ws_disconnects_abnormal")

    def _welcome(self) -> str:
        settings = self.node.settings
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

    async def _drain(self) -> None:
        """Work off the outbound queue, waiting on the socket when it applies back-pressure."""
        queue = self._queue
        send = self._send
        half = self._max_frames // 2
        try:
            while queue:
                frame = queue.pop(0)
                self._queued_bytes -= frame.size
                wire = self._wire
                if wire is None or not wire.write(frame.wire):
                    self._sending = True
                    try:
                        await send({"type": "websocket.send", "text": frame.text})
                    except Exception:
                        # The client is gone; the reader sees the disconnect.
                        queue.clear()
                        self._queued_bytes = 0
                        return
                    finally:
                        self._sending = False
                if frame.unobserved:
                    self._observe(frame)
                room = self._room
                if room is not None and len(queue) <= half and not room.done():
                    room.set_result(None)
        finally:
            self._writer = None

    def _observe(self, frame: Frame) -> None:
        frame.unobserved = False
        now = time.time()
        publish_to_send.observe(now - frame.received_at)
        ingested = frame.ingest_time()
        if ingested is not None:
            e2e_latency.observe(max(0.0, now - ingested))
            health_signals.observe_latency(max(0.0, now - ingested))

    async def _has_room(self) -> None:
        """Wait until the outbound queue is at most half full."""
        if len(self._queue) <= self._max_frames // 2 or self.close_code is not None:
            return
        self._room = asyncio.get_running_loop().create_future()
        await self._room

    async def _read_forever(self) -> None:
        limit = self.node.settings.max_frame_bytes
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                if message.get("code") == CloseCode.HEARTBEAT_TIMEOUT and self.close_code is None:
                    # The server protocol closed it for a missed pong (see websocket.py).
                    self.close_code = CloseCode.HEARTBEAT_TIMEOUT
                    self._count_disconnect(CloseCode.HEARTBEAT_TIMEOUT.reason)
                return
            if self.close_code is not None:
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
            self._refresh(str(request.get("token", "")))
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
        if not self.grant.allows(channel):
            self.send_control(
                error_frame(ErrorCode.FORBIDDEN, "the token does not grant it", channel=channel)
            )
            return
        if channel in self.positions:
            self.send_control(
                error_frame(ErrorCode.ALREADY_SUBSCRIBED, "already subscribed", channel=channel)
            )
            return
        if len(self.positions) >= self.node.settings.max_subscriptions:
            self.node.stats.limit_breaches["subscriptions"] += 1
            self.send_control(
                error_frame(
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                    f"at most {self.node.settings.max_subscriptions} subscriptions",
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
        batch = node.settings.history_batch
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
                position.epoch, position.offset = head.epoch, start
                if not recovered:
                    history = []
                while history:
                    for frame in history:
                        self._accept(position, frame)
                    if len(history) < batch or self.close_code is not None:
                        break
                    await self._has_room()
                    history = await node.log.read(channel, position.offset, batch)
        except _REDIS_ERRORS as exc:
            log.warning("recovery of %s failed: %s", channel, exc)
            self.close(CloseCode.BACKEND_UNAVAILABLE)
            return
        buffered, position.buffer = position.buffer or [], None
        for frame in buffered:
            self._accept(position, frame)

    # -- token lifetime -------------------------------------------------------------

    def _schedule_expiry(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        expires_at = self.claims.expires_at
        if expires_at is None:
            return
        warn_in = max(0.0, expires_at - self.node.settings.token_warning - time.time())
        self._expiry_timer = asyncio.get_running_loop().call_later(
            warn_in, self._warn_expiry, expires_at
        )

    def _warn_expiry(self, expires_at: float) -> None:
        close_in = max(0.0, expires_at + self.node.settings.token_grace - time.time())
        self._expiry_timer = asyncio.get_running_loop().call_later(
            close_in, self.close, CloseCode.TOKEN_EXPIRED
        )
        self.send_control(
            encode(
                {
                    "type": "token_expiring",
                    "expires_at": expires_at,
                    "grace": self.node.settings.token_grace,
                }
            )
        )

    def _refresh(self, token: str) -> None:
        try:
            claims = self.node.verifier.verify(token)
        except TokenError as exc:
            self.send_control(error_frame(ErrorCode.TOKEN_INVALID, str(exc), reason=exc.code))
            return
        if claims.subject != self.claims.subject:
            self.send_control(
                error_frame(ErrorCode.TOKEN_INVALID, "a refresh must keep the subject")
            )
            return
        self.claims = _slim(claims)
        self.grant = ChannelGrant(claims.channels)
        self._schedule_expiry()
        self.send_control(encode({"type": "refreshed", "expires_at": claims.expires_at}))
