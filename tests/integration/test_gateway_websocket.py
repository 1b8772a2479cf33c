"""The gateway's own RFC 6455 server against a real gateway process, byte by byte: the
handshake and its refusals, framing faults and their standard close codes, fragments,
pings and the closing handshake."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import time

import pytest
from tests import hostile
from tests.support import RawWebSocket, metric, wait_until

pytestmark = pytest.mark.integration

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def header(head: str, name: str) -> str:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""


async def test_the_handshake_proves_the_key_and_answers_the_offered_subprotocol(
    start_service, user_token
) -> None:
    gateway = start_service("gateway")
    socket = RawWebSocket(
        gateway.port, f"/ws?token={user_token()}", "Sec-WebSocket-Protocol: chat, tocsin.v1"
    )
    expected = base64.b64encode(hashlib.sha1(socket.key.encode() + GUID).digest()).decode()
    assert socket.status == 101
    assert header(socket.head, "sec-websocket-accept") == expected
    assert header(socket.head, "sec-websocket-protocol") == "tocsin.v1"
    welcome = await asyncio.to_thread(socket.next_message, "welcome")
    assert welcome["protocol"] == "tocsin.v1"
    socket.close()


def test_an_upgrade_split_over_reads_opens_the_same_socket_as_one_read_whole(
    start_service, user_token
) -> None:
    """A plain upgrade read whole is read by hand (`tocsin.gateway.handshake`); one that
    arrives in pieces is uvicorn's protocol's to read: both end in the same socket."""
    gateway = start_service("gateway")
    answers = []
    for pieces in (1, 3):
        key = base64.b64encode(os.urandom(16)).decode()
        request = hostile.upgrade_request(f"/ws?token={user_token()}", key=key)
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as conn:
            cut = len(request) // pieces
            for start in range(0, len(request), cut or 1):
                conn.sendall(request[start : start + cut])
                time.sleep(0.1)  # each piece its own read
            head, rest = hostile.read_head(conn)
            welcome = hostile.ServerFrames(conn, rest).message("welcome")
        expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        assert header(head, "sec-websocket-accept") == expected
        answers.append((head.split("\r\n", 1)[0], welcome["protocol"], welcome["subject"]))
    assert answers[0] == answers[1]
    assert answers[0][0] == "HTTP/1.1 101 Switching Protocols"


async def test_malformed_upgrades_get_an_http_error_and_no_socket(start_service) -> None:
    gateway = start_service("gateway")
    refusals = {
        "Sec-WebSocket-Version: 8": (426, "13"),
        "Sec-WebSocket-Key: not-base64!": (400, None),
        f"Sec-WebSocket-Key: {base64.b64encode(b'short').decode()}": (400, None),
    }
    for bad_header, (status, version) in refusals.items():
        socket = RawWebSocket(gateway.port, "/ws", bad_header)
        assert socket.status == status, bad_header
        if version is not None:
            assert header(socket.head, "sec-websocket-version") == version
        assert socket.closed_by_peer(), bad_header
        socket.close()
    elsewhere = RawWebSocket(gateway.port, "/not-a-socket")
    assert elsewhere.status == 404
    elsewhere.close()


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("unmasked", 1002),
        ("reserved_bit", 1002),
        ("unknown_opcode", 1002),
        ("orphan_continuation", 1002),
        ("long_control_frame", 1002),
        ("invalid_utf8", 1007),
        ("bad_close_code", 1002),
        ("far_too_large", 1009),
    ],
)
async def test_each_framing_fault_closes_with_its_standard_code(
    start_service, user_token, fault: str, code: int
) -> None:
    gateway = start_service("gateway", TOCSIN_MAX_FRAME_BYTES="1024")
    socket = RawWebSocket(gateway.port, f"/ws?token={user_token()}")
    await asyncio.to_thread(socket.next_message, "welcome")
    send = {
        "unmasked": lambda: socket.send_frame(RawWebSocket.TEXT, b'{"type":"ping"}', masked=False),
        # RSV1 with no extension agreed.
        "reserved_bit": lambda: socket.send_frame(0x40 | RawWebSocket.TEXT, b"{}"),
        "unknown_opcode": lambda: socket.send_frame(0x3, b"{}"),
        "orphan_continuation": lambda: socket.send_frame(RawWebSocket.CONTINUATION, b"{}"),
        "long_control_frame": lambda: socket.send_frame(RawWebSocket.PING, b"x" * 126),
        "invalid_utf8": lambda: socket.send_frame(RawWebSocket.TEXT, b'{"type":"\xff"}'),
        "bad_close_code": lambda: socket.send_frame(RawWebSocket.CLOSE, (1005).to_bytes(2, "big")),
        # Above four times the protocol limit: refused from the header, unread.
        "far_too_large": lambda: socket.send_frame(RawWebSocket.TEXT, b"x" * 5000),
    }[fault]
    send()
    _, closed_with, _ = await asyncio.to_thread(socket.frames_until_close)
    assert closed_with == code
    assert await asyncio.to_thread(socket.closed_by_peer)
    socket.close()


async def test_fragments_pings_and_the_closing_handshake(start_service, user_token) -> None:
    gateway = start_service("gateway")
    socket = RawWebSocket(gateway.port, f"/ws?token={user_token()}")
    await asyncio.to_thread(socket.next_message, "welcome")

    # A subscribe split over three frames, with a ping between two of them.
    subscribe = json.dumps({"type": "subscribe", "channel": "alerts"}).encode()
    socket.send_frame(RawWebSocket.TEXT, subscribe[:10], final=False)
    socket.send_frame(RawWebSocket.PING, b"are you there")
    socket.send_frame(RawWebSocket.CONTINUATION, subscribe[10:20], final=False)
    socket.send_frame(RawWebSocket.CONTINUATION, subscribe[20:])
    opcode, payload = await asyncio.to_thread(socket.next_frame)
    assert (opcode, payload) == (RawWebSocket.PONG, b"are you there")
    subscribed = await asyncio.to_thread(socket.next_message, "subscribed")
    assert subscribed["channel"] == "alerts"

    # The client's close is answered with the same code, then the server ends the connection.
    socket.send_frame(RawWebSocket.CLOSE, (1000).to_bytes(2, "big") + b"bye")
    _, code, _ = await asyncio.to_thread(socket.frames_until_close)
    assert code == 1000
    assert await asyncio.to_thread(socket.closed_by_peer)
    socket.close()
    wait_until(
        lambda: metric(gateway.url, 'tocsin_ws_disconnects_total{code="client_closed"}') == 1,
        what="the client's close to be counted",
    )
