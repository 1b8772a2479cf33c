"""uvicorn's httptools protocol, with each response leaving in one write.

uvicorn writes a response's head and its body to the transport separately, and
uvloop sends each write at once: two send(2) calls, two TCP segments, and on
loopback the receiving side's work done twice on the sender's core. Profiles
of one alert per request showed those writes as the largest single cost of
ingest's accept path. Here the protocol writes through `CoalescedTransport`,
which holds what is written during one event-loop step and hands it to the
real transport in one write right after: a response's head and body, and
the answers to pipelined requests, go out together. The protocol keeps the
limits and timeouts every HTTP server of Tocsin has (`tocsin.common.httplimits`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tocsin.common.httplimits import LimitedHttpToolsProtocol

__all__ = ["CoalescedTransport", "CoalescingHttpToolsProtocol"]


class CoalescedTransport:
    """A transport proxy whose writes of one event-loop step leave in one write.

    Everything but writing and closing goes straight to the real transport.
    Closing first sends what is held, so an answer written just before a
    `Connection: close` still leaves; aborting drops it, as the real abort does.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: list[bytes] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._held.append(bytes(data))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def write_now(self, data: bytes) -> None:
        """Write `data` at once, after whatever is held (an answer written outside the
        request/response cycle, which needs no company)."""
        if self._held:
            self._held.append(data)
            self.flush()
        elif not self._transport.is_closing():
            self._transport.write(data)

    def flush(self) -> None:
        """Hand what is held to the real transport now."""
        self._flush_scheduled = False
        if not self._held:
            return
        held, self._held = self._held, []
        if self._transport.is_closing():
            return
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def is_closing(self) -> bool:
        # Asked on every request: spelled out rather than found through `__getattr__`.
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._held)

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, resume_reading, set_protocol, ...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(LimitedHttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, with Tocsin's limits, over a `CoalescedTransport`."""

    wrap_transport = CoalescedTransport
