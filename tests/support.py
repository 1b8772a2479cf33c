"""Helpers the integration tests share: waiting for a condition, reading metrics, frames."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket as sockets
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pytest

from tests import hostile
from tocsin.common import broker as queues
from tocsin.common.models import AlertIn, QueuedAlert

__all__ = [
    "RawWebSocket",
    "debian_binary",
    "descendants",
    "enqueue_alert",
    "metric",
    "next_frame",
    "process_alive",
    "recv",
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
