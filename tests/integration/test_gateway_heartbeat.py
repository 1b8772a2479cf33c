"""Heartbeats against a real gateway: a socket that answers no ping is closed with the
documented `4002 heartbeat_timeout`, while one that answers stays open, even when the
gateway itself was too stalled to read its pong in time."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
import websockets
from tests.support import RawWebSocket, metric, next_frame, wait_until

pytestmark = pytest.mark.integration


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

    # A client that reads frames but never answers a ping.
    silent = RawWebSocket(gateway.port, f"/ws?token={user_token()}")
    opcodes, code, reason = await asyncio.to_thread(silent.frames_until_close)
    silent.close()

    assert RawWebSocket.PING in opcodes, "the gateway sent no ping before closing"
    assert (code, reason) == (4002, "heartbeat_timeout")
    wait_until(
        lambda: metric(gateway.url, 'tocsin_ws_disconnects_total{code="heartbeat_timeout"}') == 1,
        what="the heartbeat_timeout disconnect to be counted",
    )
    # The answering client lived through the same pings and is still served.
    await answering.send(json.dumps({"type": "ping"}))
    assert (await next_frame(answering, "pong"))["type"] == "pong"
    await answering.close()


def test_a_pong_the_gateway_was_too_stalled_to_read_does_not_close_the_socket(
    start_service, user_token
) -> None:
    gateway = start_service(
        "gateway", TOCSIN_HEARTBEAT_INTERVAL="0.5", TOCSIN_HEARTBEAT_TIMEOUT="1"
    )
    client = RawWebSocket(gateway.port, f"/ws?token={user_token()}")
    client.next_message("welcome")
    opcode, payload = client.next_frame()
    assert opcode == RawWebSocket.PING
    # The gateway freezes before it reads the pong, for longer than the pong timeout:
    # on waking, its overdue pong timer runs before the pong is read. The lateness is
    # the gateway's own, so the client is not closed for it.
    os.kill(gateway.process.pid, signal.SIGSTOP)
    try:
        client.send_frame(RawWebSocket.PONG, payload)
        time.sleep(2.5)
    finally:
        os.kill(gateway.process.pid, signal.SIGCONT)
    # The socket keeps being pinged and served for several heartbeats after.
    pings = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        opcode, payload = client.next_frame()
        assert opcode != RawWebSocket.CLOSE, f"closed with {payload!r}"
        if opcode == RawWebSocket.PING:
            pings += 1
            client.send_frame(RawWebSocket.PONG, payload)
    assert pings >= 2
    assert metric(gateway.url, 'tocsin_ws_disconnects_total{code="heartbeat_timeout"}') == 0
    client.close()
