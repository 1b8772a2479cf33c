"""Heartbeats against a real gateway: a socket that answers no ping is closed with the
documented `4002 heartbeat_timeout`, while one that answers stays open."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket as sockets

import pytest
import websockets
from tests.support import metric, next_frame, wait_until

pytestmark = pytest.mark.integration

PING_OPCODE = 0x9
CLOSE_OPCODE = 0x8


class SilentClient:
    """A WebSocket client spoken by hand that reads frames but never answers a ping."""

    def __init__(self, port: int, token: str) -> None:
        self.socket = sockets.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.socket.sendall(
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._chunk()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _chunk(self) -> bytes:
        chunk = self.socket.recv(65536)
        assert chunk, "the gateway closed the connection without a close frame"
        return chunk

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += self._chunk()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def next_frame(self) -> tuple[int, bytes]:
        """The next server frame (unmasked, unfragmented) as (opcode, payload)."""
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(self._take(2), "big")
        elif length == 127:
            length = int.from_bytes(self._take(8), "big")
        return first & 0x0F, self._take(length)

    def frames_until_close(self) -> tuple[list[int], int, str]:
        """Read until the close frame; the opcodes seen before it, the close code and reason."""
        opcodes: list[int] = []
        while True:
            opcode, payload = self.next_frame()
            if opcode == CLOSE_OPCODE:
                return opcodes, int.from_bytes(payload[:2], "big"), payload[2:].decode()
            opcodes.append(opcode)


async def test_a_socket_that_answers_no_ping_is_closed_with_heartbeat_timeout(
    start_service, user_token
) -> None:
    gateway = start_service(
        "gateway", TOCSIN_HEARTBEAT_INTERVAL="0.2", TOCSIN_HEARTBEAT_TIMEOUT="1"
    )
    # A client whose pings are answered by its WebSocket library, connected first.
    answering = await websockets.connect(
        gateway.ws_url,
        additional_headers={"authorization": f"Bearer {user_token()}"},
        ping_interval=None,
    )
    await next_frame(answering, "welcome")

    silent = SilentClient(gateway.port, user_token())
    opcodes, code, reason = await asyncio.to_thread(silent.frames_until_close)
    silent.socket.close()

    assert PING_OPCODE in opcodes, "the gateway sent no ping before closing"
    assert (code, reason) == (4002, "heartbeat_timeout")
    wait_until(
        lambda: metric(gateway.url, 'tocsin_ws_disconnects_total{code="heartbeat_timeout"}') == 1,
        what="the heartbeat_timeout disconnect to be counted",
    )
    # The answering client lived through the same pings and is still served.
    await answering.send(json.dumps({"type": "ping"}))
    assert (await next_frame(answering, "pong"))["type"] == "pong"
    await answering.close()
