"""Heartbeats against a real gateway: a socket that answers no ping is closed with the
documented `4002 heartbeat_timeout`, while one that answers stays open."""

from __future__ import annotations

import asyncio
import json

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
