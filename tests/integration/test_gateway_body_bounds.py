"""Dashboard API bodies bounded in bytes against a real gateway: 413 problem+json, read no further.

Raw sockets, so the tests see what the gateway does before the client has sent
all it announced: a declared Content-Length over the bound is refused with no
body sent at all, and a chunked body that never ends is refused once it has
passed the bound.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tocsin.gateway.api.alerts import MAX_ACTION_BYTES
from tocsin.gateway.api.silences import MAX_SILENCE_BYTES

pytestmark = pytest.mark.integration

# Every dashboard endpoint that reads a body, with its bound.
BOUNDED = [
    ("/v1/silences", MAX_SILENCE_BYTES),
    ("/v1/alerts/some-alert/ack", MAX_ACTION_BYTES),
    ("/v1/alerts/some-alert/unack", MAX_ACTION_BYTES),
    ("/v1/alerts/some-alert/resolve", MAX_ACTION_BYTES),
]


@pytest.fixture(scope="module")
def gateway(start_module_service: Any) -> Any:
    return start_module_service("gateway")


@pytest.fixture
def token(user_token: Callable[..., str]) -> str:
    return user_token()


def _answer_of(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 answer (status, lower-cased headers, body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"the connection closed before an answer: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (f.split(":", 1) for f in fields)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = connection.recv(65536)
        assert chunk, "the connection closed inside the answer's body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def _head(path: str, token: str, framing: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\n"
        f"content-type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


@pytest.fixture
def connect(gateway: Any) -> Iterator[Callable[[], socket.socket]]:
    opened: list[socket.socket] = []

    def open_one() -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
        opened.append(connection)
        return connection

    yield open_one
    for connection in opened:
        connection.close()


@pytest.mark.parametrize(("path", "bound"), BOUNDED)
def test_a_declared_length_over_the_bound_is_413_before_any_body_is_sent(
    connect: Callable[[], socket.socket], token: str, path: str, bound: int
) -> None:
    connection = connect()
    connection.sendall(_head(path, token, f"content-length: {bound + 1}"))
    status, headers, body = _answer_of(connection)
    assert status == 413, body[:300]
    assert headers["content-type"].startswith("application/problem+json")
    assert json.loads(body)["detail"].endswith(f"at most {bound} bytes")


@pytest.mark.parametrize(("path", "bound"), BOUNDED)
def test_a_chunked_body_is_413_once_past_the_bound_though_it_never_ends(
    connect: Callable[[], socket.socket], token: str, path: str, bound: int
) -> None:
    connection = connect()
    connection.sendall(_head(path, token, "transfer-encoding: chunked"))
    piece = b" " * 16384
    sent = 0
    # A little past the bound, and no last chunk: only a reader that counts answers.
    while sent <= bound + len(piece):
        connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sent += len(piece)
    status, headers, body = _answer_of(connection)
    assert status == 413, body[:300]
    assert headers["content-type"].startswith("application/problem+json")


def test_the_largest_silence_the_model_accepts_is_created_however_escaped(
    gateway: Any, token: str
) -> None:
    # Every field at its longest, every character outside the BMP and written by
    # json.dumps as an escaped surrogate pair: 12 bytes a character.
    wide = "\U0001f514"
    silence = {
        "matchers": [
            {"name": f"l{index:03d}" + "a" * 124, "value": wide * 1024, "isRegex": False}
            for index in range(64)
        ],
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2099-01-01T00:00:00Z",
        "createdBy": wide * 256,
        "comment": wide * 4096,
    }
    body = json.dumps(silence).encode()
    assert 512 * 1024 < len(body) <= MAX_SILENCE_BYTES
    answer = httpx.post(
        f"{gateway.url}/v1/silences",
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text[:300]
    assert answer.json()["comment"] == wide * 4096


def test_an_action_comment_at_its_longest_is_read_whole(gateway: Any, token: str) -> None:
    # The largest action body is within the bound: it reaches the alert lookup (404).
    body = json.dumps({"comment": "\U0001f514" * 4096}).encode()
    assert len(body) <= MAX_ACTION_BYTES
    answer = httpx.post(
        f"{gateway.url}/v1/alerts/no-such-alert/ack",
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 404, answer.text[:300]
