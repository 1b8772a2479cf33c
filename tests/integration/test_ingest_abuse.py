"""Hostile HTTP clients against a real ingest process, with crafted raw requests: heads
and URLs too large, heads and bodies sent too slowly (slowloris), and connections held
idle. Each test asserts the answers (problem+json, before the application sees the
request), ingest's resident memory, and that its event loop kept answering `/healthz`
(bounded only generously: it proves the loop was not frozen, it does not time ingest)."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from tests.hostile import connect, flood, http_answer, probing, rss

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
NOT_FROZEN = 3.0
ALERT = json.dumps({"name": "DiskFull", "severity": "critical", "labels": {"host": "db-1"}})


def post(token: str, body: str, *, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return (
        f"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{body}"
    ).encode()


def test_heads_and_urls_too_large_are_refused_before_the_application(start_service) -> None:
    ingest = start_service("ingest")
    before = rss(ingest.process.pid)
    with probing(f"{ingest.url}/healthz") as probe:
        many = connect(ingest.port)
        fields = "".join(f"x-{n}: {n}\r\n" for n in range(500))
        many.sendall(f"POST /v1/alerts HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
        # 64 MiB of headers in one unfinished request, and a 32 MiB URL: the audit saw
        # both held whole.
        headers = connect(ingest.port)
        headers.sendall(b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\n")
        header_bytes = flood(headers, b"x-pad: " + b"y" * 1000 + b"\r\n", 64 * MiB)
        url = connect(ingest.port)
        url.sendall(b"GET /healthz?")
        url_bytes = flood(url, b"q" * 65536, 32 * MiB)
        answers = [http_answer(c) for c in (many, headers, url)]
        grown = rss(ingest.process.pid) - before
    assert [status for status, _ in answers] == [431, 431, 414]
    for _, answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"content-type: application/problem+json" in head
        assert json.loads(body)["type"].startswith("https://tocsin.dev/problems/")
    assert header_bytes < 16 * MiB
    assert url_bytes < 16 * MiB
    assert grown < 32 * MiB, f"grew by {grown / MiB:.0f} MiB"
    assert probe.failures == 0
    assert probe.slowest < NOT_FROZEN  # inf when it never answered


def test_slow_heads_and_bodies_are_cut_off_while_idle_connections_stay_open_past_5_seconds(
    start_service, user_token
) -> None:
    ingest = start_service("ingest", TOCSIN_HTTP_HEAD_TIMEOUT="1", TOCSIN_HTTP_BODY_TIMEOUT="1")
    token = user_token(scopes=("ingest",))
    # A producer's pooled connection: one request now, the next after more than uvicorn's
    # default keep-alive of 5 s (pools crashed on reset connections).
    pooled = connect(ingest.port)
    pooled.sendall(post(token, ALERT))
    assert pooled.recv(65536).startswith(b"HTTP/1.1 202")
    opened = time.monotonic()
    before = rss(ingest.process.pid)
    with probing(f"{ingest.url}/healthz") as probe:
        # 250 slowloris connections: a header byte every 0.3 s never completes a head.
        slow = [connect(ingest.port) for _ in range(250)]
        for conn in slow:
            conn.sendall(b"POST /v1/alerts HTTP/1.1\r\n")
        # A body that stops after 10 of its 1,000 bytes.
        trickle = connect(ingest.port)
        trickle.sendall(post(token, ALERT[:10], declared=1000))
        for _ in range(5):
            time.sleep(0.3)
            for conn in slow:
                with contextlib.suppress(OSError):
                    conn.sendall(b"x")
        slow_answers = [http_answer(c, timeout=15)[0] for c in slow]
        trickled_status, trickled = http_answer(trickle, timeout=15)
        grown = rss(ingest.process.pid) - before
    assert slow_answers == [408] * 250
    assert trickled_status == 408
    assert b"body must arrive" in trickled
    assert grown < 32 * MiB, f"grew by {grown / MiB:.0f} MiB"
    assert probe.failures == 0
    assert probe.slowest < NOT_FROZEN
    time.sleep(max(0.0, 6.0 - (time.monotonic() - opened)))
    pooled.sendall(post(token, ALERT))
    assert pooled.recv(65536).startswith(b"HTTP/1.1 202")
    pooled.close()


def test_a_client_that_pipelines_requests_and_reads_no_answer_is_dropped(start_service) -> None:
    ingest = start_service("ingest")
    before = rss(ingest.process.pid)
    with probing(f"{ingest.url}/healthz") as probe:
        greedy = connect(ingest.port, receive_buffer=4096)
        # Requests back to back, answers never read: uvicorn queued every request a read
        # held, so memory grew with what the client sent.
        sent = flood(greedy, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 1000, 64 * MiB)
        grown = rss(ingest.process.pid) - before
    outcome = "open"
    greedy.settimeout(10)
    try:
        while greedy.recv(65536):
            pass
        outcome = "closed"
    except TimeoutError:
        outcome = "open"
    except OSError:
        outcome = "reset"
    assert outcome in ("closed", "reset")
    assert sent < 16 * MiB
    assert grown < 32 * MiB, f"grew by {grown / MiB:.0f} MiB"
    assert probe.failures == 0
    assert probe.slowest < NOT_FROZEN
