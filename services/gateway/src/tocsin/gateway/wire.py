"""Writing pre-encoded WebSocket frames straight to a socket's transport.

ASGI sends one message per awaited call, which costs a coroutine (and usually a
task switch) per socket per event. A server-to-client text frame is only a
header and the payload, identical for every socket, so the gateway encodes it
once per event (`Frame.wire`) and writes the same bytes to each transport.

`WireSansIOProtocol` is uvicorn's websockets-sansio protocol plus one ASGI
extension, `tocsin.wire`: a `Wire` whose `write` succeeds only while the
connection is open and its transport is not applying back-pressure. Anything
else (paused, closing, another server) falls back to the ordinary ASGI send,
which waits, and the session's bounded queue takes over.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["WIRE_EXTENSION", "Wire", "WireSansIOProtocol", "text_frame_header"]

WIRE_EXTENSION = "tocsin.wire"


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, final text frame carrying `length` bytes (RFC 6455 5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


class Wire:
    """Synchronous frame writes to one connection, while it can take them at once."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    def write(self, data: bytes) -> bool:
        """Write one complete pre-encoded frame; False if it must go the slow way."""
        protocol = self._protocol
        # A close from the peer closes the transport (uvicorn answers it at once),
        # so `is_closing` covers the connection's state too.
        if protocol.close_sent or not protocol.writable.is_set() or protocol.transport.is_closing():
            return False
        protocol.transport.write(data)
        return True


class WireSansIOProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, offering the `tocsin.wire` extension."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The ASGI task is created but has not run yet: the scope can still grow.
        self.scope["extensions"][WIRE_EXTENSION] = {"wire": Wire(self)}
