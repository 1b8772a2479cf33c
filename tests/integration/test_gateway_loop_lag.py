"""A gateway whose event loop lags, against real processes: a healthy socket's pong that
arrived while the loop was busy is judged by when it was readable, and new sockets are
refused with HTTP 503 + Retry-After while the lag lasts (a storm is spread over time,
not taken on at once).

The lag is made by stopping the gateway process (SIGSTOP) for a moment at a time, as a
saturated machine deschedules it; nothing here depends on how long anything took."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from tests.hostile import upgrade_request
from tests.support import RawWebSocket, metric, wait_until

pytestmark = pytest.mark.integration

_HEARTBEAT_CLOSES = 'tocsin_ws_disconnects_total{code="heartbeat_timeout"}'


# The held socket is a raw one that never answers a ping: no ping comes while the test
# runs, however long a loaded machine makes it.
_NO_PINGS = {"TOCSIN_HEARTBEAT_INTERVAL": "600"}


def test_a_pong_that_came_while_the_gateway_loop_lagged_past_its_deadline_keeps_the_socket(
    start_service, user_token
) -> None:
    gateway = start_service(
        "gateway", TOCSIN_HEARTBEAT_INTERVAL="0.3", TOCSIN_HEARTBEAT_TIMEOUT="0.1"
    )
    pid = gateway.process.pid
    client = RawWebSocket(gateway.port, f"/ws?token={user_token()}")
    client.next_message("welcome")
    # Each ping is answered at once, then the gateway stops for 0.2 s: past the pong's
    # deadline, but less than the lag the gateway forgives outright (0.25 s), so on
    # waking its pong deadline comes before its loop has read the pong waiting in the
    # kernel. A machine slower than that forgives the stall instead: try again.
    stalls = 0
    while metric(gateway.url, "tocsin_ws_late_pongs_read_total") == 0:
        assert stalls < 40, "no stall ever ended with the pong unread past its deadline"
        opcode, payload = client.next_frame()
        assert opcode != RawWebSocket.CLOSE, f"closed with {payload!r} after {stalls} stalls"
        if opcode != RawWebSocket.PING:
            continue
        os.kill(pid, signal.SIGSTOP)
        try:
            client.send_frame(RawWebSocket.PONG, payload)
            time.sleep(0.2)
        finally:
            os.kill(pid, signal.SIGCONT)
        stalls += 1
    # The socket is pinged and answered again, and nothing was closed for a heartbeat.
    pings = 0
    while pings < 3:
        opcode, payload = client.next_frame()
        assert opcode != RawWebSocket.CLOSE, f"closed with {payload!r}"
        if opcode == RawWebSocket.PING:
            pings += 1
            client.send_frame(RawWebSocket.PONG, payload)
    assert metric(gateway.url, _HEARTBEAT_CLOSES) == 0
    client.close()


def test_while_the_gateway_loop_lags_new_sockets_get_503_with_retry_after_then_get_in(
    start_service, user_token
) -> None:
    gateway = start_service("gateway", TOCSIN_ADMISSION_LAG="0.1", **_NO_PINGS)
    pid = gateway.process.pid
    held = RawWebSocket(gateway.port, f"/ws?token={user_token()}")
    held.next_message("welcome")

    # The loop runs late by 0.3 s at every sample while the storm of upgrades comes.
    lagging = threading.Event()
    lagging.set()

    def lag_the_loop() -> None:
        while lagging.is_set():
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.3)
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)

    stopper = threading.Thread(target=lag_the_loop)
    stopper.start()
    answers: list[RawWebSocket] = []
    try:
        for _ in range(20):
            answers.append(RawWebSocket(gateway.port, f"/ws?token={user_token()}"))
            if answers[-1].status == 503:
                break
    finally:
        lagging.clear()
        stopper.join()
        os.kill(pid, signal.SIGCONT)
    refused = [a for a in answers if a.status == 503]
    assert refused, f"every upgrade was taken on while the loop lagged: {answers[-1].head}"
    head = refused[0].head.lower()
    assert "retry-after: 1" in head
    assert metric(gateway.url, "tocsin_ws_limit_breaches_total", limit="loop_lag") >= 1
    for answer in answers:
        answer.close()

    # Once the loop keeps time again, sockets are admitted, and the one it held was
    # served throughout.
    def admitted() -> bool:
        socket = RawWebSocket(gateway.port, f"/ws?token={user_token()}")
        socket.close()
        return socket.status == 101

    wait_until(admitted, what="a socket admitted once the loop caught up")
    held.send_text('{"type": "ping"}')
    assert held.next_message("pong")["type"] == "pong"
    assert metric(gateway.url, _HEARTBEAT_CLOSES) == 0
    held.close()


async def _upgrade(port: int, token: str) -> tuple[str, asyncio.StreamWriter]:
    """Send an upgrade; the answer's head and the open connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(f"/ws?token={token}"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    return head.decode("latin-1").lower(), writer


async def test_a_storm_of_upgrades_is_spread_by_503_retry_after_and_every_client_gets_in(
    start_service, user_token
) -> None:
    gateway = start_service("gateway", TOCSIN_ADMISSION_LAG="0.1", **_NO_PINGS)
    held = RawWebSocket(gateway.port, f"/ws?token={user_token()}")
    held.next_message("welcome")
    clients = 300
    tokens = [user_token() for _ in range(clients)]
    # The storm arrives while the gateway is stopped (its loop is 0.3 s late on waking)
    # and its loop finds every upgrade at once.
    os.kill(gateway.process.pid, signal.SIGSTOP)
    try:
        pending = [asyncio.create_task(_upgrade(gateway.port, t)) for t in tokens]
        await asyncio.sleep(0.3)
    finally:
        os.kill(gateway.process.pid, signal.SIGCONT)
    admitted: list[asyncio.StreamWriter] = []
    refused_heads: list[str] = []
    waiting = list(range(clients))
    for _ in range(60):
        answers = await asyncio.gather(*pending)
        retry = []
        for index, (head, writer) in zip(waiting, answers, strict=True):
            if head.startswith("http/1.1 101"):
                admitted.append(writer)
                continue
            assert head.startswith("http/1.1 503"), head
            refused_heads.append(head)
            writer.close()
            retry.append(index)
        if not retry:
            break
        # Each refused client waits what the gateway asked, as the SDKs do, then retries.
        await asyncio.sleep(1.0)
        waiting = retry
        pending = [asyncio.create_task(_upgrade(gateway.port, tokens[i])) for i in retry]
    assert refused_heads, "the whole storm was taken on at once"
    assert all("retry-after: 1" in head for head in refused_heads)
    assert len(admitted) == clients, "some clients never got in"
    assert metric(gateway.url, "tocsin_ws_limit_breaches_total", limit="loop_lag") == len(
        refused_heads
    )
    for writer in admitted:
        writer.close()
    # The socket the gateway held through the storm is still served.
    held.send_text('{"type": "ping"}')
    assert held.next_message("pong")["type"] == "pong"
    held.close()
