"""Helpers the integration tests share: waiting for a condition, reading metrics, frames."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

__all__ = ["metric", "next_frame", "recv", "wait_until"]

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
