"""`CoalescedTransport`: what one event-loop step writes leaves in one write, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from tocsin.ingest.httpserver import CoalescedTransport


class RecordingTransport:
    """The parts of an asyncio transport the proxy uses, recording what reaches it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def _coalesced() -> tuple[CoalescedTransport, RecordingTransport]:
    real = RecordingTransport()
    return CoalescedTransport(real), real  # type: ignore[arg-type]


async def test_head_and_body_written_in_one_step_reach_the_transport_as_one_write() -> None:
    transport, real = _coalesced()
    transport.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert real.writes == []
    assert transport.get_write_buffer_size() == 46
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"]


async def test_writes_of_later_steps_leave_separately_and_in_order() -> None:
    transport, real = _coalesced()
    transport.write(b"first")
    await asyncio.sleep(0)
    transport.writelines([b"second", b"", b"third"])
    await asyncio.sleep(0)
    assert real.writes == [b"first", b"secondthird"]


async def test_close_sends_what_is_held_before_closing() -> None:
    transport, real = _coalesced()
    transport.write(b"HTTP/1.1 413 Content Too Large\r\nconnection: close\r\n\r\n")
    transport.close()
    assert real.writes == [b"HTTP/1.1 413 Content Too Large\r\nconnection: close\r\n\r\n"]
    assert real.closed
    await asyncio.sleep(0)
    assert len(real.writes) == 1


async def test_abort_and_a_closed_peer_drop_what_is_held() -> None:
    transport, real = _coalesced()
    transport.write(b"dropped")
    transport.abort()
    await asyncio.sleep(0)
    assert real.writes == []
    assert real.aborted

    transport, real = _coalesced()
    transport.write(b"too late")
    real.closed = True  # the peer went away before the step ended
    await asyncio.sleep(0)
    assert real.writes == []


async def test_other_transport_calls_go_to_the_real_transport() -> None:
    transport, _ = _coalesced()
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)
    assert not transport.is_closing()
