"""Hostile clients against a real gateway process, with crafted raw clients: floods read
ahead of the application, pings from a client that never reads, subscribers that never
read, sockets that never authenticate, tokens without the `read` scope or with a
malformed `channels` claim, and HTTP requests that are too large or too slow.

Each test asserts what the client is answered, the gateway's resident memory, and that
its event loop kept answering `/healthz` meanwhile (the slowest answer is only bounded
generously: it proves the loop was not frozen, it does not time the gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import threading
import time
from typing import Any

import httpx
import jwt
import pytest
import redis
from conftest import TEST_JWT_SECRET
from tests.hostile import (
    BINARY,
    PING,
    TEXT,
    ServerFrames,
    client_frame,
    connect,
    flood,
    http_answer,
    probing,
    rss,
    upgrade,
)
from tests.support import RawWebSocket, metric, wait_until

from tocsin.client import Backoff, EventStream
from tocsin.common.events import EventPublisher

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
# A loop that answered nothing for this long was held; a loaded test machine stays under it.
NOT_FROZEN = 3.0


def test_a_flood_sent_after_the_close_is_not_queued(start_service) -> None:
    gateway = start_service("gateway", TOCSIN_CLOSE_TIMEOUT="2")
    before = rss(gateway.process.pid)
    # 20 sockets without a token: a frame that is no `auth` frame, then 60 messages of
    # 200 KiB each. The server closes at the first frame; what follows must be dropped
    # (the audit saw 64 x 256 KiB queued per socket: 20 sockets took 314 MiB).
    message = client_frame(BINARY, b"x" * 200 * 1024)
    sockets_ = [upgrade(gateway.port)[0] for _ in range(20)]
    peak = before
    with probing(f"{gateway.url}/healthz") as probe:
        threads = []
        for conn in sockets_:
            conn.sendall(client_frame(TEXT, b'{"type":"hello"}'))
            thread = threading.Thread(target=flood, args=(conn, message * 4, 60 * len(message)))
            thread.start()
            threads.append(thread)
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss(gateway.process.pid))
            time.sleep(0.05)
    assert (peak - before) < 64 * MiB, f"grew by {(peak - before) / MiB:.0f} MiB"
    assert probe.failures == 0
    assert probe.slowest < NOT_FROZEN  # inf when it never answered
    for conn in sockets_:
        conn.close()
    assert metric(gateway.url, 'tocsin_ws_disconnects_total{code="token_missing"}') == 20


def test_a_ping_flood_from_a_client_that_never_reads_stalls_only_that_client(
    start_service,
) -> None:
    gateway = start_service("gateway", TOCSIN_AUTH_TIMEOUT="60")
    before = rss(gateway.process.pid)
    # Unauthenticated, reading nothing, with a tiny receive window: every ping asks for
    # a pong it will never read (the audit saw one such socket add 425 MiB).
    conn, status, _ = upgrade(gateway.port, receive_buffer=4096)
    assert status == 101
    pings = client_frame(PING, b"p" * 125) * 8000  # ~1 MiB of pings per send
    with probing(f"{gateway.url}/healthz") as probe:
        sent = flood(conn, pings, 200 * MiB)
        grown = rss(gateway.process.pid) - before
    # The server stopped reading once its pongs backed up, so the sender stalled.
    assert sent < 100 * MiB, f"{sent / MiB:.0f} MiB of pings were read"
    assert grown < 32 * MiB, f"grew by {grown / MiB:.0f} MiB"
    assert probe.failures == 0
    assert probe.slowest < NOT_FROZEN  # inf when it never answered
    conn.close()


def test_an_unauthenticated_socket_whose_pongs_back_up_is_still_dropped_at_its_auth_timeout(
    start_service,
) -> None:
    gateway = start_service(
        "gateway",
        TOCSIN_AUTH_TIMEOUT="1",
        TOCSIN_CLOSE_TIMEOUT="1",
        TOCSIN_READ_RATE_BYTES="0",  # no read budget: the pongs back up at once
    )
    conn, status, _ = upgrade(gateway.port, receive_buffer=4096)
    assert status == 101
    client = conn.getsockname()
    flood(conn, client_frame(PING, b"p" * 125) * 8000, 200 * MiB)
    # Its error frame and close cannot be written; it was held for ever before.
    wait_until(lambda: _send_queue(gateway.port, client) is None, timeout=30)
    conn.close()


def test_never_reading_subscribers_closed_as_slow_consumers_give_their_slots_back(
    start_service, redis_server, user_token
) -> None:
    gateway = start_service(
        "gateway",
        TOCSIN_MAX_CONNECTIONS="3",
        TOCSIN_CLOSE_TIMEOUT="1",
        TOCSIN_OUTBOUND_QUEUE_FRAMES="20",
        TOCSIN_OUTBOUND_QUEUE_BYTES="65536",
    )
    stuck = []
    for _ in range(3):
        conn, _, rest = upgrade(gateway.port, f"/ws?token={user_token()}", receive_buffer=4096)
        frames = ServerFrames(conn, rest)
        frames.message("welcome")
        conn.sendall(client_frame(TEXT, b'{"type":"subscribe","channel":"alerts"}'))
        frames.message("subscribed")
        stuck.append(conn)  # and never read again
    publisher = EventPublisher(redis.Redis.from_url(redis_server.url))
    filler = "x" * 8000
    for n in range(1500):
        publisher.publish(["alerts"], json.dumps({"n": n, "filler": filler}))
    wait_until(
        lambda: metric(gateway.url, 'tocsin_ws_disconnects_total{code="slow_consumer"}') == 3,
        what="the three subscribers to be closed as slow consumers",
    )
    # Their close frames cannot be written; the close timer drops the connections, and
    # with them the sessions' slots (the audit saw them held forever).
    wait_until(
        lambda: metric(gateway.url, "tocsin_ws_connections") == 0,
        what="the slow consumers' sessions to end",
    )
    conn, _, rest = upgrade(gateway.port, f"/ws?token={user_token()}")
    assert ServerFrames(conn, rest).message("welcome")
    for socket in (*stuck, conn):
        socket.close()


def test_sockets_waiting_to_authenticate_count_against_the_limit_and_have_their_own_cap(
    start_service, user_token
) -> None:
    gateway = start_service(
        "gateway",
        TOCSIN_MAX_CONNECTIONS="5",
        TOCSIN_MAX_UNAUTHENTICATED="3",
        TOCSIN_AUTH_TIMEOUT="60",
    )

    def refused(target: str = "/ws") -> int:
        # A full gateway refuses the upgrade itself: 503 and when to try again.
        conn = RawWebSocket(gateway.port, target)
        conn.close()
        if conn.status == 503:
            assert "retry-after: 2" in conn.head.lower()
        return conn.status

    waiting = [upgrade(gateway.port) for _ in range(3)]
    assert all(status == 101 for _, status, _ in waiting)
    # The fourth unauthenticated socket is over their own cap.
    wait_until(lambda: refused() == 503, what="a fourth unauthenticated socket refused")
    welcomed = []
    for _ in range(2):
        conn, _, rest = upgrade(gateway.port, f"/ws?token={user_token()}")
        ServerFrames(conn, rest).message("welcome")
        welcomed.append(conn)
    # 3 waiting + 2 sessions = the limit of 5: the waiting ones count.
    assert refused(f"/ws?token={user_token()}") == 503
    for conn, _, rest in waiting:
        auth = json.dumps({"type": "auth", "token": user_token()}).encode()
        conn.sendall(client_frame(TEXT, auth))
        ServerFrames(conn, rest).message("welcome")
    assert refused() == 503
    assert refused(f"/ws?token={user_token()}") == 503
    assert metric(gateway.url, "tocsin_ws_connections") == 5
    assert metric(gateway.url, "tocsin_ws_limit_breaches_total", limit="unauthenticated") >= 1
    for conn in [*welcomed, *(c for c, _, _ in waiting)]:
        conn.close()


def _token(scope: str, **claims: object) -> str:
    now = int(time.time())
    payload = {"sub": "hostile", "aud": "tocsin", "iat": now, "exp": now + 600, "scope": scope}
    payload.update(claims)
    return jwt.encode(payload, TEST_JWT_SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def default_gateway(start_module_service: Any) -> Any:
    """One default gateway for the token cases: each is refused before it holds anything
    (no session, no subscription), so no case sees another's."""
    return start_module_service("gateway")


@pytest.mark.parametrize(
    ("token", "code", "status"),
    [
        (_token("ingest"), 4406, 403),
        (_token(""), 4406, 403),
        # A string claim was read one character at a time: its `*` granted every channel.
        (_token("read", channels="secret.*"), 4401, 401),
        (_token("read", channels=["alerts", 7]), 4401, 401),
    ],
    ids=["ingest_only", "no_scope", "channels_string", "channels_not_strings"],
)
def test_sockets_need_the_read_scope_and_a_list_of_channels_like_the_rest_api(
    default_gateway: Any, token: str, code: int, status: int
) -> None:
    gateway = default_gateway
    answer = httpx.get(
        f"{gateway.url}/v1/alerts", headers={"authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == status
    # The same token at the upgrade, and in an `auth` frame.
    conn, _, rest = upgrade(gateway.port, f"/ws?token={token}")
    assert ServerFrames(conn, rest).close_code()[0] == code
    conn.close()
    conn, _, rest = upgrade(gateway.port)
    conn.sendall(client_frame(TEXT, json.dumps({"type": "auth", "token": token}).encode()))
    closed_with, frames = ServerFrames(conn, rest).close_code()
    assert closed_with == code
    assert frames[-1]["type"] == "error"
    conn.close()


def test_http_requests_too_large_or_too_slow_are_answered_and_closed(start_service) -> None:
    gateway = start_service(
        "gateway", TOCSIN_HTTP_HEAD_TIMEOUT="1", TOCSIN_HTTP_KEEPALIVE_TIMEOUT="2"
    )
    before = rss(gateway.process.pid)
    with probing(f"{gateway.url}/healthz") as probe:
        # Too many header fields; one header too large, still unfinished; a long URL.
        many = connect(gateway.port)
        fields = "".join(f"x-{n}: {n}\r\n" for n in range(200))
        many.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
        huge = connect(gateway.port)
        huge.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nx-big: ")
        flood(huge, b"y" * 65536, 64 * MiB)
        long_url = connect(gateway.port)
        long_url.sendall(b"GET /healthz?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [http_answer(c) for c in (many, huge, long_url)]
        # Slowloris: a header byte every 0.3 s never completes a head within 1 s.
        slow = [connect(gateway.port) for _ in range(50)]
        for conn in slow:
            conn.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(4):
            time.sleep(0.3)
            for conn in slow:
                with contextlib.suppress(OSError):
                    conn.sendall(b"x")
        slow_answers = [http_answer(c, timeout=10)[0] for c in slow]
        grown = rss(gateway.process.pid) - before
    assert [status for status, _ in answers] == [431, 431, 414]
    assert all(b"application/problem+json" in body for _, body in answers)
    assert slow_answers == [408] * 50
    assert grown < 32 * MiB, f"grew by {grown / MiB:.0f} MiB"
    assert probe.failures == 0
    assert probe.slowest < NOT_FROZEN  # inf when it never answered
    # An idle connection, before its first request or after one, is closed when idle.
    idle = connect(gateway.port)
    served = connect(gateway.port)
    served.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert http_answer(idle, timeout=15) == (0, b"")
    assert http_answer(served, timeout=15)[0] == 200


def _send_queue(port: int, client: tuple[str, int]) -> int | None:
    """Bytes the server's end of the connection from `client` holds unsent or unacknowledged
    in the kernel (/proc/net/tcp's tx_queue), or None once that connection is gone."""
    host = "0100007F"  # 127.0.0.1, as the kernel prints it
    local = f"{host}:{port:04X}"
    remote = f"{host}:{client[1]:04X}"
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote and fields[3] == "01":  # ESTABLISHED
            return int(fields[4].split(":")[0], 16)
    return None


def test_a_client_that_never_reads_its_answers_is_dropped_after_the_send_timeout(
    start_service,
) -> None:
    gateway = start_service("gateway", TOCSIN_HTTP_SEND_TIMEOUT="1")
    greedy = connect(gateway.port, receive_buffer=4096)
    client = greedy.getsockname()
    # Requests for the OpenAPI document (30 KB), a few at a time, answers never read,
    # until the kernel holds no more of them: the answers then wait on the client,
    # which held them (and the connection) for ever before. Few enough at a time that
    # the pipelining bound never applies.
    request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    queued = -1
    for _ in range(200):
        greedy.sendall(request * 4)
        time.sleep(0.2)
        now = _send_queue(gateway.port, client)
        assert now is not None, "dropped before its answers filled the buffers"
        if now == queued:
            break
        queued = now
    else:
        raise AssertionError("the kernel kept taking answers")
    # Generous: the timeout is 1 s; a loaded machine must not fail this.
    wait_until(lambda: _send_queue(gateway.port, client) is None, timeout=20)
    # A client that reads gets its answer as before.
    assert httpx.get(f"{gateway.url}/openapi.json", timeout=10).status_code == 200
    greedy.close()


async def test_the_sdk_refused_by_a_full_gateway_waits_its_retry_after_then_connects(
    start_service, user_token
) -> None:
    gateway = start_service("gateway", TOCSIN_MAX_CONNECTIONS="1")
    held = RawWebSocket(gateway.port, f"/ws?token={user_token()}")
    held.next_message("welcome")
    # A back-off of a millisecond would retry hundreds of times a second; the 503's
    # Retry-After (2 s) holds the client back instead.
    stream = EventStream(gateway.ws_url, user_token(), backoff=Backoff(base=0.001, cap=0.001))
    events = stream.events()
    first = asyncio.ensure_future(anext(events))
    await asyncio.sleep(1.0)
    assert stream.reconnects == 1
    held.close()

    def connections() -> float:
        return metric(gateway.url, "tocsin_ws_connections")

    # Once there is room, its next attempt connects.
    await asyncio.to_thread(wait_until, lambda: connections() == 0, 10.0, "the room")
    await asyncio.to_thread(wait_until, lambda: connections() == 1, 15.0, "the SDK to connect")
    assert stream.reconnects <= 3
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await events.aclose()
