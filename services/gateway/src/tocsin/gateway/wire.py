"""Writing pre-encoded WebSocket frames straight to a socket's transport.

ASGI sends one message per awaited call, which costs a coroutine (and usually a
task switch) per socket per event. A server-to-client text frame is only a
header and the payload, identical for every socket, so the gateway encodes it
once per event (`Frame.wire`) and writes the same bytes to each transport.

The gateway's WebSocket protocol (`websocket.py`) offers one ASGI extension,
`tocsin.wire`: a `Wire` whose `write` succeeds only while the connection is
open and its transport is not applying back-pressure. Anything else (paused,
closing, another server) falls back to the ordinary ASGI send, which waits,
and the session's bounded queue takes over. The frames a wire takes in one
loop turn reach its transport in one write (`Coalescer`).

`Inbox` and `Writable` keep each connection small: an `asyncio.Queue` and an
`asyncio.Event` would cost five empty deques of ~760 bytes between them; these
do the same jobs with a list and a future made on demand.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from tocsin.gateway.rfc6455 import TEXT, frame_header

__all__ = [
    "WIRE_EXTENSION",
    "Coalescer",
    "Inbox",
    "Wire",
    "WireOwner",
    "Writable",
    "text_frame_header",
]

WIRE_EXTENSION = "tocsin.wire"


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, final text frame carrying `length` bytes (RFC 6455 5.2)."""
    return frame_header(TEXT, length)


class WireOwner(Protocol):
    """The connection a wire writes to."""

    close_sent: bool
    writable: Writable
    transport: asyncio.Transport


class Wire:
    """Synchronous frame writes to one connection, while it can take them at once.

    Frames written during one loop turn are coalesced and reach the transport
    in one write at the end of the turn (see `Coalescer`): when the hub works
    off a burst of events, each socket costs one send() per burst instead of
    one per event, and on loopback TCP that syscall is most of a delivery.
    """

    __slots__ = ("_coalescer", "_pending", "_protocol", "_writable")

    def __init__(self, protocol: WireOwner, coalescer: Coalescer) -> None:
        self._protocol = protocol
        self._writable = protocol.writable
        self._coalescer = coalescer
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> bool:
        """Take one complete pre-encoded frame; False if it must go the slow way."""
        protocol = self._protocol
        # A close from the peer closes the transport (it is answered at once),
        # so `is_closing` covers the connection's state too.
        if protocol.close_sent or not self._writable.ready or protocol.transport.is_closing():
            # What the slow way sends must follow what was already taken.
            self.flush()
            return False
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._coalescer.add(self)
        else:
            pending.append(data)
        return True

    def flush(self) -> None:
        """Hand the frames taken so far to the transport, in one write."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        transport = self._protocol.transport
        if not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))


class Coalescer:
    """Flushes every wire written to during a loop turn, once, when the turn ends."""

    __slots__ = ("_wires",)

    def __init__(self) -> None:
        self._wires: list[Wire] = []

    def add(self, wire: Wire) -> None:
        if not self._wires:
            asyncio.get_running_loop().call_soon(self.flush)
        self._wires.append(wire)

    def flush(self) -> None:
        wires, self._wires = self._wires, []
        for wire in wires:
            wire.flush()


class Inbox:
    """A connection's ASGI receive queue, one reader at a time (the app).

    It counts the payload bytes it holds (`size`), so that the connection can
    stop reading while the application is behind: the bound is the reader's
    pause, not a refusal here.
    """

    __slots__ = ("_loop", "_messages", "_waiter", "size")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        # The connection's loop when known: asking for the running one costs a getpid on 3.11.
        self._loop = loop
        self._messages: list[tuple[Any, int]] = []
        self._waiter: asyncio.Future[None] | None = None
        self.size = 0

    def put_nowait(self, message: Any, size: int = 0) -> None:
        self._messages.append((message, size))
        self.size += size
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._messages

    def qsize(self) -> int:
        return len(self._messages)

    async def get(self) -> Any:
        while not self._messages:
            await self.arrival()
        return self.pop()

    def arrival(self) -> asyncio.Future[None]:
        """A future done when a message is put (awaited directly, it costs the reader no
        coroutine of its own: `SocketProtocol.receive` waits on it)."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            loop = self._loop or asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
        return waiter

    def pop(self) -> Any:
        """The oldest message (there must be one)."""
        message, size = self._messages.pop(0)
        self.size -= size
        return message


class Writable:
    """Whether the transport takes writes now (cleared while it applies back-pressure)."""

    __slots__ = ("_waiters", "ready")

    def __init__(self) -> None:
        # An attribute, not only `is_set()`: the per-delivery check reads it.
        self.ready = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self.ready

    def set(self) -> None:
        self.ready = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self.ready = False

    async def wait(self) -> bool:
        if self.ready:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True
