"""What the benchmarks share: service processes pinned to a core, and raw WebSocket frames."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from tocsin.common.server import free_port

__all__ = ["masked_text_frame", "service"]


@contextlib.contextmanager
def service(
    name: str, redis_url: str, *, secret: str, core: int | None = None, **env: str
) -> Iterator[tuple[str, int]]:
    """A Tocsin service process, ready, pinned to `core` when given; yields its URL and pid."""
    port = free_port()
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
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.05)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def masked_text_frame(text: bytes) -> bytes:
    """A client-to-server WebSocket text frame (masked, as clients must), for payloads < 126 B."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(text))
    return bytes([0x81, 0x80 | len(text)]) + mask + masked
