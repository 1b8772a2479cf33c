"""`Outbox`: one socket's bounded outbound queue, its writer and the wire fast path.

A frame goes straight to the socket (`Wire.write`, no task, no copy) when
nothing waits before it; otherwise it is queued and one writer task, alive only
while a backlog exists, works the queue off through the ASGI `send`, waiting on
the socket when it applies back-pressure. A queue that outgrows its bounds in
frames or bytes calls `overflow` (the session closes as a slow consumer) and
`drop` then empties it at once.

`Session` extends `Outbox` rather than holding one: one object per socket keeps
the per-socket memory and the fan-out's hot path (`deliver` -> `push`) flat.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tocsin.common.metrics import health_signals
from tocsin.gateway.frames import Frame
from tocsin.gateway.metrics import e2e_latency, publish_to_send
from tocsin.gateway.wire import Wire

__all__ = ["Outbox", "WriterState", "observe"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class WriterState(enum.Enum):
    """Where the outbox's writing stands."""

    IDLE = "idle"
    """No backlog, no writer task: a frame may go straight to the socket."""
    DRAINING = "draining"
    """A writer task works off the backlog."""
    BLOCKED = "blocked"
    """The writer waits on a socket that applies back-pressure."""


# Read per frame: a module global is found in a few ns, an enum member (a class
# attribute lookup through EnumType) in ~70 ns on Python 3.11.
_IDLE, _DRAINING, _BLOCKED = WriterState.IDLE, WriterState.DRAINING, WriterState.BLOCKED


def observe(frame: Frame) -> None:
    """Record publish-to-send and end-to-end latency at a live event's first send."""
    frame.unobserved = False
    now = time.time()
    publish_to_send.observe(now - frame.received_at)
    ingested = frame.ingest_time()
    if ingested is not None:
        e2e_latency.observe(max(0.0, now - ingested))
        health_signals.observe_latency(max(0.0, now - ingested))


class Outbox:
    """Bounded queue plus writer for one socket; `push` never awaits."""

    __slots__ = (
        "_max_bytes",
        "_max_frames",
        "_queue",
        "_queued_bytes",
        "_room",
        "_send",
        "_wire",
        "_writer",
        "writer_state",
    )

    def __init__(
        self,
        send: Send,
        wire: Wire | None,
        max_frames: int,
        max_bytes: int,
    ) -> None:
        self._send = send
        self._wire = wire
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        # A list, not a deque: it is empty nearly always, and an empty deque
        # costs 760 bytes per socket against 56.
        self._queue: list[Frame] = []
        self._queued_bytes = 0
        self._room: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.writer_state = _IDLE

    @property
    def queued_frames(self) -> int:
        return len(self._queue)

    @property
    def writer(self) -> asyncio.Task[None] | None:
        """The writer task while a backlog is being worked off."""
        return self._writer

    def push(self, frame: Frame) -> None:
        """Send `frame` after everything queued before it; never awaits."""
        wire = self._wire
        if wire is not None and self.writer_state is _IDLE and wire.write(frame.wire):
            # The common case: nothing waiting, the socket takes it now; no task involved.
            if frame.unobserved:
                observe(frame)
            return
        if (
            len(self._queue) >= self._max_frames
            or self._queued_bytes + frame.size > self._max_bytes
        ):
            self.overflow()
            return
        self._queue.append(frame)
        self._queued_bytes += frame.size
        if self._writer is None:
            # A writer task exists only while there is a backlog to work off.
            self.writer_state = _DRAINING
            self._writer = asyncio.create_task(self._drain())

    def overflow(self) -> None:
        """The queue is full: what a socket that does not read costs. Drops it here;
        a session closes the socket too."""
        self.drop()

    def drop(self) -> int:
        """Forget the queue at once (a slow consumer); returns how many frames it held.

        A writer stuck on a socket that does not drain is stopped here."""
        dropped = len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        if self.writer_state is _BLOCKED and self._writer is not None:
            self._writer.cancel()
        return dropped

    async def room(self) -> None:
        """Wait until the queue is at most half full."""
        if len(self._queue) <= self._max_frames // 2:
            return
        self._room = asyncio.get_running_loop().create_future()
        await self._room

    async def _drain(self) -> None:
        queue = self._queue
        send = self._send
        half = self._max_frames // 2
        try:
            while queue:
                frame = queue.pop(0)
                self._queued_bytes -= frame.size
                wire = self._wire
                if wire is None or not wire.write(frame.wire):
                    self.writer_state = _BLOCKED
                    try:
                        await send({"type": "websocket.send", "text": frame.text})
                    except Exception:
                        # The client is gone; the reader sees the disconnect.
                        queue.clear()
                        self._queued_bytes = 0
                        return
                    finally:
                        self.writer_state = _DRAINING
                if frame.unobserved:
                    observe(frame)
                room = self._room
                if room is not None and len(queue) <= half and not room.done():
                    room.set_result(None)
        finally:
            self._writer = None
            self.writer_state = _IDLE
