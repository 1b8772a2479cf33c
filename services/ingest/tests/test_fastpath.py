"""`scan`: which requests the fast path takes, and what it reads from them.

Whether the fast path answers them as uvicorn's path does is
`tests/integration/test_ingest_fastpath.py`'s question, against real servers.
"""

from __future__ import annotations

from typing import Any

import pytest

from tocsin.common.httplimits import HttpLimits
from tocsin.ingest.accept import ProducerHeaders
from tocsin.ingest.fastpath import scan
from tocsin.ingest.settings import IngestSettings

ENDPOINT: Any = object()
ENDPOINTS = {b"/v1/alerts": ENDPOINT}
BODY = b'{"name":"DiskFull"}'


def _request(*headers: str, head: str = "POST /v1/alerts HTTP/1.1", body: bytes = BODY) -> bytes:
    lines = [head, "Host: ingest", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def test_a_plain_post_is_taken_with_the_headers_the_pipeline_reads() -> None:
    data = _request(
        "authorization:  Bearer tsk_a_b",
        "IDEMPOTENCY-KEY: k-1",
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Connection: keep-alive",
        "X-Note: caf\xe9",
    )
    found = scan(data, ENDPOINTS, HttpLimits())
    assert found is not None
    endpoint, headers, body = found
    assert endpoint is ENDPOINT
    assert body == BODY
    assert headers == ProducerHeaders(
        authorization="Bearer tsk_a_b",
        content_length=str(len(BODY)),
        idempotency_key="k-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


@pytest.mark.parametrize(
    "data",
    [
        _request(head="POST /v1/other HTTP/1.1"),
        _request(head="POST /v1/alerts?x=1 HTTP/1.1"),
        _request(head="PUT /v1/alerts HTTP/1.1"),
        _request(head="POST /v1/alerts HTTP/1.0"),
        _request("Transfer-Encoding: chunked"),
        _request("Expect: 100-continue"),
        _request("Upgrade: websocket"),
        _request("Connection: close"),
        _request("Authorization: Bearer a", "Authorization: Bearer b"),
        _request(f"Content-Length: {len(BODY)}", f"Content-Length: {len(BODY)}"),
        _request("Content-Length: +19"),
        _request("Content-Length: 0x13"),
        _request("X-Folded: a", " b"),
        _request("X-Space : a"),
        _request("X-Trailing: a "),
        _request("X-Control: a\x01b"),
        _request("X-Nul: a\x00b"),
        _request("X-Bare: a\nb"),
        _request(f"Content-Length: {len(BODY) + 1}"),  # the body is not all here yet
        _request() + _request(),  # pipelined
        _request().replace(b"\r\n\r\n", b"\r\n"),  # the head is not over
    ],
)
def test_anything_unusual_is_left_to_uvicorn(data: bytes) -> None:
    assert scan(data, ENDPOINTS, HttpLimits()) is None


def test_a_head_near_a_limit_is_left_to_uvicorn() -> None:
    many = _request(*(f"X-{i}: v" for i in range(10)))  # 12 fields with Host and the length
    assert scan(many, ENDPOINTS, HttpLimits(max_headers=12)) is not None
    assert scan(many, ENDPOINTS, HttpLimits(max_headers=11)) is None
    assert scan(many, ENDPOINTS, HttpLimits(max_head_bytes=len(many) - len(BODY))) is None


def test_the_default_keep_alive_outlasts_what_producers_pools_keep() -> None:
    """Go's http.Transport (Prometheus, Alertmanager) keeps idle connections 90 s;
    the issue asks for at least 75 s."""
    assert IngestSettings().http_limits().keepalive_timeout >= 90
