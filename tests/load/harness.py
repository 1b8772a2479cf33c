"""What the benchmarks share: service processes pinned to a core, the socket benchmarks'
core layout, the load side's event loop, and the base of the hand-made WebSocket clients
(whose upgrade request and frames are `tests.hostile`'s)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import psutil

from tests.support import wait_until_serving
from tocsin.client.devserver import RedisServer, free_port, stop_process

__all__ = [
    "SocketClient",
    "otlp_sink",
    "run_load",
    "service",
    "socket_bench_layout",
    "two_cores",
]

T = TypeVar("T")


@contextlib.contextmanager
def service(
    name: str,
    redis_url: str,
    *,
    secret: str,
    core: int | None = None,
    port: int | None = None,
    **env: str,
) -> Iterator[tuple[str, int]]:
    """A Tocsin service process, ready, pinned to `core` when given, on `port` when given
    (a restarted process takes its predecessor's); yields its URL and pid."""
    port = port or free_port()
    environ = dict(os.environ)
    environ.update(
        REDIS_URL=redis_url,
        TOCSIN_PORT=str(port),
        TOCSIN_JWT_SECRET=secret,
        TOCSIN_LOG_LEVEL="WARNING",
        **env,
    )
    pin = None if core is None else (lambda: os.sched_setaffinity(0, {core}))
    process = subprocess.Popen(
        [sys.executable, "-m", "tocsin.client", name],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=pin,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/readyz", process)
        yield url, process.pid
    finally:
        stop_process(process, 15)


_SINK = """
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
server.serve_forever()
"""


@contextlib.contextmanager
def otlp_sink() -> Iterator[dict[str, str]]:
    """An OTLP/HTTP endpoint that accepts and drops spans; yields the env that turns tracing on.

    For the "tracing on" rows: the services export every span for real, over
    HTTP, to a process of its own (not this one: its work would slow the load
    generator down and show up as latency).
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _SINK, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the OTLP sink did not start")
            time.sleep(0.05)
        yield {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_TRACES_SAMPLER": "always_on",
        }
    finally:
        stop_process(process, 5)


def two_cores() -> tuple[int, int]:
    """The first two cores this process may use (the same one twice on a single core)."""
    available = sorted(os.sched_getaffinity(0))
    return (available[0], available[1]) if len(available) > 1 else (available[0], available[0])


def run_load(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run the load side on uvloop when it is installed: it must stay cheaper than the
    server it measures (the plain loop still works, only slower)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


@contextlib.contextmanager
def socket_bench_layout() -> Iterator[tuple[RedisServer, int, int]]:
    """The socket benchmarks' layout: the server under test goes on the first core; this
    process (the load), a private Redis and what is started from here on the second.
    Yields the Redis server, the server's core and the load's core."""
    server_core, load_core = two_cores()
    os.sched_setaffinity(0, {load_core})
    with RedisServer() as redis_server:
        if redis_server.pid is not None:
            psutil.Process(redis_server.pid).cpu_affinity([load_core])
        yield redis_server, server_core, load_core


@dataclass
class SocketClient(asyncio.Protocol):
    """The part the benchmarks' hand-made WebSocket clients share: the upgrade request is
    sent on connect, and `subscribed` fails if the connection closes before it is set."""

    request: bytes
    sample: bool
    subscribed: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    closed: bool = False
    _transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError("closed before subscribing"))
