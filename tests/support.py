"""Helpers the integration tests share: waiting for a condition, reading metrics, frames, spans."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket as sockets
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests import hostile
from tocsin.common import broker as queues
from tocsin.common.models import AlertIn, QueuedAlert

__all__ = [
    "OtlpReceiver",
    "RawWebSocket",
    "ReceivedSpan",
    "debian_binary",
    "descendants",
    "enqueue_alert",
    "freeze_for",
    "metric",
    "next_frame",
    "process_alive",
    "recv",
    "start_previewing_gateway",
    "wait_until",
    "wait_until_serving",
]

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 30.0, what: str = "") -> T:
    """Poll `check` until it returns something truthy, and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(0.02)


def freeze_for(pid: int, seconds: float) -> threading.Event:
    """SIGSTOP process `pid` now and SIGCONT it after `seconds`; the event is set once it
    runs again. Longer than a client's socket timeout, a command sent meanwhile is sent
    again by redis-py, and Redis runs both after the thaw (docs/queues.md, "Lost replies")."""
    thawed = threading.Event()

    def thaw() -> None:
        os.kill(pid, signal.SIGCONT)
        thawed.set()

    os.kill(pid, signal.SIGSTOP)
    threading.Timer(seconds, thaw).start()
    return thawed


def wait_until_serving(
    url: str,
    process: subprocess.Popen[Any],
    timeout: float = 30.0,
    log: Callable[[], str] = str,
) -> None:
    """Poll `url` until it answers 200; fail at once if `process` exits first, or after
    `timeout`, with what `log()` returns in the message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before {url} answered\n{log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s\n{log()}")


def descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to `pid` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` at `url`/metrics whose labels include `labels`.

    `name` may also carry a literal label selector (`name{code="x"}`) to match exactly.
    """
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        matches = series == name if "{" in name else series.split("{", 1)[0] == name
        if matches and all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


async def recv(socket: Any, within: float = 15.0) -> dict[str, Any]:
    """The next JSON frame from a WebSocket."""
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), within))
    return frame


async def next_frame(socket: Any, kind: str, within: float = 15.0) -> dict[str, Any]:
    """The next frame of type `kind`, skipping others."""
    while True:
        frame = await recv(socket, within)
        if frame["type"] == kind:
            return frame


class RawWebSocket:
    """A WebSocket client spoken by hand, blocking: it sends exactly the bytes a test
    asks for (masked or not, fragmented, malformed) and answers nothing on its own.

    Built from `tests.hostile`'s request, frame and reader, which the abuse tests and
    the hostile-load benchmark use too."""

    CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

    def __init__(self, port: int, target: str = "/ws", *headers: str) -> None:
        self.socket = sockets.create_connection(("127.0.0.1", port), timeout=30)
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.socket.sendall(hostile.upgrade_request(target, *headers, key=self.key))
        #: The response's status line and headers, as sent.
        self.head, rest = hostile.read_head(self.socket)
        self._frames = hostile.ServerFrames(self.socket, rest)

    @property
    def status(self) -> int:
        return int(self.head.split(" ", 2)[1])

    def send_frame(
        self, opcode: int, payload: bytes, *, final: bool = True, masked: bool = True
    ) -> None:
        """One client frame, masked as RFC 6455 requires unless told otherwise."""
        mask = os.urandom(4) if masked else None
        self.socket.sendall(hostile.client_frame(opcode, payload, final=final, mask=mask))

    def send_text(self, text: str) -> None:
        self.send_frame(self.TEXT, text.encode())

    def next_frame(self) -> tuple[int, bytes]:
        """The next server frame (unmasked, unfragmented) as (opcode, payload)."""
        return self._frames.next()

    def next_message(self, kind: str) -> dict[str, Any]:
        """The next text frame whose JSON `type` is `kind`."""
        return self._frames.message(kind)

    def frames_until_close(self) -> tuple[list[int], int, str]:
        """Read until the close frame; the opcodes seen before it, the close code and reason."""
        opcodes: list[int] = []
        while True:
            opcode, payload = self.next_frame()
            if opcode == self.CLOSE:
                return opcodes, int.from_bytes(payload[:2], "big"), payload[2:].decode()
            opcodes.append(opcode)

    def closed_by_peer(self) -> bool:
        """Whether the server closed the TCP connection (reads what is left until then)."""
        try:
            while self.socket.recv(65536):
                pass
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.socket.close()


def debian_binary(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` first when it is missing.

    Installing needs root and apt-get (CI and the dev machines have both); where
    they are missing or the install fails, the calling test skips and says why.
    """
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            f"`{binary}` is missing and installing Debian's {package} needs root and apt-get"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    result = subprocess.run(install, env=env, capture_output=True, timeout=900, check=False)
    if result.returncode != 0:  # a stale package list: refresh it once
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, timeout=900, check=False)
    found = shutil.which(binary)
    if not found:
        pytest.skip(f"apt-get install {package} failed: "
                    + result.stderr.decode(errors="replace")[-500:])  # fmt: skip
    return found


def enqueue_alert(redis_url: str, fingerprint: str, labels: dict[str, str]) -> None:
    """Put one alert on the processor's queue as ingest would, bypassing HTTP."""
    message = QueuedAlert(
        id=uuid.uuid4().hex,
        fingerprint=fingerprint,
        received_at=time.time(),
        producer="test",
        alert=AlertIn(name="latency", severity="error", labels=labels, dedup_key=fingerprint),
    )
    broker = queues.build_broker(redis_url)
    broker.enqueue(
        queues.build_message(
            queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, ([msgspec.to_builtins(message)],)
        )
    )
    broker.close()


@dataclass(frozen=True)
class ReceivedSpan:
    """A span as decoded from an export request, with the service that sent it."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    links: tuple[tuple[str, str], ...]
    attributes: dict[str, object]


class OtlpReceiver:
    """A minimal OTLP/HTTP traces endpoint on a free loopback port."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests: list[ExportTraceServiceRequest] = []  # as received, in order
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests.append(request)
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes: dict[str, object] = {}
                    for attribute in span.attributes:
                        value = attribute.value
                        kind = value.WhichOneof("value")
                        attributes[attribute.key] = getattr(value, kind) if kind else None
                    with self._lock:
                        self.spans.append(
                            ReceivedSpan(
                                service=service,
                                name=span.name,
                                kind=span.kind,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                links=tuple(
                                    (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                                ),
                                attributes=attributes,
                            )
                        )

    def wait_for(
        self, found: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                spans = list(self.spans)
            if found(spans):
                return spans
            time.sleep(0.1)
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_previewing_gateway(start_service: Callable[..., Any], **gateway_env: str) -> Any:
    """A notifier and a gateway that forwards template previews to it (`TOCSIN_NOTIFIER_URL`)."""
    notifier = start_service("notifier")
    return start_service("gateway", TOCSIN_NOTIFIER_URL=notifier.url, **gateway_env)
