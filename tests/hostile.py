"""Crafted clients for the abuse tests and the hostile-load benchmark: raw HTTP requests,
WebSocket frames built by hand, a service's resident memory, and a probe that measures
whether a service's event loop still answers while it is attacked."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket as sockets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

__all__ = [
    "ZERO_MASK",
    "LoopProbe",
    "ServerFrames",
    "client_frame",
    "connect",
    "flood",
    "http_answer",
    "probing",
    "read_head",
    "rss",
    "upgrade",
    "upgrade_request",
]

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def rss(pid: int) -> int:
    """Resident memory of process `pid`, in bytes."""
    return int(psutil.Process(pid).memory_info().rss)


def connect(port: int, *, receive_buffer: int = 0, timeout: float = 30.0) -> sockets.socket:
    """A TCP connection to the service; a small `receive_buffer` makes a client that
    reads nothing fill up quickly (set before connecting, so the window is small)."""
    conn = sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM)
    if receive_buffer:
        conn.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, receive_buffer)
    conn.settimeout(timeout)
    conn.connect(("127.0.0.1", port))
    return conn


def upgrade_request(target: str = "/ws", *headers: str, key: str = "") -> bytes:
    """A WebSocket upgrade request: `headers` as given, then a fresh `Sec-WebSocket-Key`
    (or `key`) and version 13 unless `headers` carry their own."""
    given = {header.split(":", 1)[0].strip().lower() for header in headers}
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade", *headers]  # fmt: skip
    if "sec-websocket-key" not in given:
        lines.append(f"Sec-WebSocket-Key: {key or base64.b64encode(os.urandom(16)).decode()}")
    if "sec-websocket-version" not in given:
        lines.append("Sec-WebSocket-Version: 13")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(conn: sockets.socket) -> tuple[str, bytes]:
    """An HTTP answer's status line and headers, and the bytes read past them."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        assert chunk, "closed during the handshake"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def upgrade(
    port: int, target: str = "/ws", *, receive_buffer: int = 0, timeout: float = 30.0
) -> tuple[sockets.socket, int, bytes]:
    """A WebSocket upgrade by hand; the socket, the answer's status, and any bytes read
    past the answer's head."""
    conn = connect(port, receive_buffer=receive_buffer, timeout=timeout)
    conn.sendall(upgrade_request(target))
    head, rest = read_head(conn)
    return conn, int(head.split(" ", 2)[1]), rest


ZERO_MASK = b"\0\0\0\0"


def client_frame(
    opcode: int, payload: bytes, *, final: bool = True, mask: bytes | None = ZERO_MASK
) -> bytes:
    """A client frame masked with `mask`, or unmasked when it is None (a protocol error).

    The default all-zero key is valid (the mask bit is set) and leaves the payload as it
    is, so large floods cost nothing to build; `os.urandom(4)` masks as a browser does.
    """
    length = len(payload)
    first = (0x80 if final else 0) | opcode
    mask_bit = 0 if mask is None else 0x80
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = bytes((first, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + length.to_bytes(8, "big")
    if mask is None:
        return header + payload
    if mask != ZERO_MASK:
        payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return header + mask + payload


def flood(conn: sockets.socket, chunk: bytes, total: int, stall: float = 2.0) -> int:
    """Send `chunk` repeatedly until `total` bytes went out, the peer is gone, or a send
    has been blocked for `stall` seconds (the server stopped reading); bytes sent."""
    conn.settimeout(stall)
    sent = 0
    with contextlib.suppress(OSError):  # TimeoutError included
        while sent < total:
            conn.sendall(chunk)
            sent += len(chunk)
    return sent


class ServerFrames:
    """Reads the server's (unmasked, unfragmented) frames from a raw connection, after
    `already`, the bytes read past the handshake."""

    def __init__(self, conn: sockets.socket, already: bytes = b"") -> None:
        self.conn = conn
        self.buffer = already

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise ConnectionError("closed without a close frame")
            self.buffer += chunk
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def next(self) -> tuple[int, bytes]:
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(self._take(2), "big")
        elif length == 127:
            length = int.from_bytes(self._take(8), "big")
        return first & 0x0F, self._take(length)

    def message(self, kind: str) -> dict[str, Any]:
        """The next text frame whose JSON `type` is `kind` (fails on a close first)."""
        while True:
            opcode, payload = self.next()
            assert opcode != CLOSE, f"closed with {payload!r} while waiting for {kind}"
            if opcode == TEXT:
                frame: dict[str, Any] = json.loads(payload)
                if frame.get("type") == kind:
                    return frame

    def close_code(self) -> tuple[int, list[dict[str, Any]]]:
        """Read until the close frame: its code, and the JSON text frames before it."""
        texts: list[dict[str, Any]] = []
        while True:
            opcode, payload = self.next()
            if opcode == CLOSE:
                return int.from_bytes(payload[:2], "big"), texts
            if opcode == TEXT:
                texts.append(json.loads(payload))


def http_answer(conn: sockets.socket, timeout: float = 30.0) -> tuple[int, bytes]:
    """The status and everything the server sends until it closes the connection;
    status 0 when it closed without an answer. Fails if it is still open after `timeout`."""
    conn.settimeout(timeout)
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {timeout}s; received {data[:200]!r}") from None
    except OSError:
        pass  # reset: closed as well
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data
    return int(data.split(b" ", 2)[1]), data


@dataclass
class LoopProbe:
    """Asks `url` every `interval` seconds from a thread; the slowest answer tells whether
    the service's event loop was held (a frozen loop answers nothing at all)."""

    url: str
    interval: float = 0.05
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.latencies.append(time.perf_counter() - started)
                else:
                    self.failures += 1
                self._stop.wait(self.interval)

    @property
    def slowest(self) -> float:
        return max(self.latencies, default=float("inf"))


@contextlib.contextmanager
def probing(url: str) -> Iterator[LoopProbe]:
    """A `LoopProbe` running for the duration of the block: answered once before it,
    and once more after it (so an attack shorter than one probe is still measured)."""
    probe = LoopProbe(url)
    thread = threading.Thread(target=probe.run, name="loop-probe", daemon=True)
    thread.start()
    try:
        _answered_again(probe, 0)
        yield probe
        _answered_again(probe, len(probe.latencies) + probe.failures)
    finally:
        probe._stop.set()
        thread.join(35)


def _answered_again(probe: LoopProbe, seen: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(probe.latencies) + probe.failures <= seen and time.monotonic() < deadline:
        time.sleep(0.01)
