"""The gateway's RFC 6455 frame reader, as pure logic: masking, fragments in any chunking,
control frames between fragments, and every rule it enforces with its close code; and the
socket protocol's read-ahead bound, against a recording transport."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests import hostile

from tocsin.gateway.websocket import (
    FrameError,
    FrameReader,
    SocketProtocol,
    SocketTimings,
    frame,
    parse_close,
    unmask,
)

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def client_frame(opcode: int, payload: bytes, *, final: bool = True) -> bytes:
    """A client frame masked with a fresh random key, as a browser sends it (RFC 6455 5.3)."""
    return hostile.client_frame(opcode, payload, final=final, mask=os.urandom(4))


@given(payload=st.binary(max_size=300), mask=st.binary(min_size=4, max_size=4))
def test_unmasking_twice_gives_the_payload_back(payload: bytes, mask: bytes) -> None:
    masked = unmask(payload, mask)
    assert masked == bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    assert unmask(masked, mask) == payload


@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from([TEXT, BINARY]),
            st.binary(max_size=70_000),
            st.integers(min_value=1, max_value=4),
            st.binary(max_size=125) | st.none(),
        ),
        max_size=5,
    ),
    chunk=st.integers(min_value=1, max_value=9000),
)
def test_messages_come_out_whole_however_the_bytes_are_cut(
    messages: list[tuple[int, bytes, int, bytes | None]], chunk: int
) -> None:
    wire = b""
    expected: list[tuple[int, bytes]] = []
    for opcode, payload, pieces, ping in messages:
        size = max(1, -(-len(payload) // pieces))
        parts = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for index, part in enumerate(parts):
            final = index == len(parts) - 1
            wire += client_frame(opcode if index == 0 else CONTINUATION, part, final=final)
            if final:
                expected.append((opcode, payload))
            if ping is not None and index == 0:
                # A control frame may come between the fragments of a message.
                wire += client_frame(PING, ping)
                expected.append((PING, ping))
    reader = FrameReader(max_size=1 << 20)
    received: list[tuple[int, bytes]] = []
    for start in range(0, len(wire), chunk):
        received += reader.feed(wire[start : start + chunk])
    assert received == expected


# Reads an idle gateway sees (whole pongs, empty or not), beside near misses of the
# empty-pong fast path (unmasked, not final, reserved bits, a byte short or over) and
# pieces of a fragmented message the pongs may fall between.
_MASKS = st.binary(min_size=4, max_size=4)
_READS = st.one_of(
    st.builds(lambda mask: hostile.client_frame(PONG, b"", mask=mask), _MASKS),
    st.builds(
        lambda body, mask: hostile.client_frame(PONG, body, mask=mask),
        st.binary(min_size=1, max_size=3),
        _MASKS,
    ),
    st.sampled_from(
        [
            bytes((0x8A, 0x00)) + b"\x00" * 4,
            bytes((0x0A, 0x80)) + b"\x00" * 4,
            bytes((0xCA, 0x80)) + b"\x00" * 4,
            bytes((0x8A, 0x80)) + b"\x00" * 3,
            bytes((0x8A, 0x80)) + b"\x00" * 5,
            bytes((0x89, 0x80)) + b"\x00" * 4,
        ]
    ),
    st.builds(lambda body: hostile.client_frame(TEXT, body, final=False), st.binary(max_size=20)),
    st.builds(lambda body: hostile.client_frame(CONTINUATION, body), st.binary(max_size=20)),
    st.binary(min_size=1, max_size=7),
)


@given(reads=st.lists(st.tuples(_READS, st.integers(min_value=0, max_value=3)), max_size=12))
def test_the_empty_pong_fast_path_answers_as_the_general_parse_does(
    reads: list[tuple[bytes, int]],
) -> None:
    fast, general = FrameReader(max_size=64), FrameReader(max_size=64)
    for data, max_frames in reads:
        outcomes = []
        for reader, parse in ((fast, fast.feed), (general, general.parse)):
            try:
                outcomes.append((parse(data, max_frames), reader.frames, reader.more))
            except FrameError as exc:
                outcomes.append((exc.code, exc.reason))
        assert outcomes[0] == outcomes[1]
        if isinstance(outcomes[0][0], int):
            return  # a broken stream closes the socket: nothing is read after it


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (bytes((0x81, 0x02)) + b"{}", 1002),  # unmasked
        (bytes((0xC1, 0x82)) + b"\0\0\0\0{}", 1002),  # RSV1 set
        (client_frame(0x3, b"x"), 1002),  # reserved data opcode
        (client_frame(0xB, b"x"), 1002),  # reserved control opcode
        (client_frame(PING, b"x" * 126), 1002),  # control frame over 125 bytes
        (client_frame(PING, b"x", final=False), 1002),  # fragmented control frame
        (client_frame(CONTINUATION, b"x"), 1002),  # nothing to continue
        (client_frame(TEXT, b"a", final=False) + client_frame(TEXT, b"b"), 1002),
        (client_frame(TEXT, b"x" * 101), 1009),  # over the limit
        (client_frame(TEXT, b"x" * 60, final=False) + client_frame(CONTINUATION, b"x" * 41), 1009),
    ],
)
def test_each_broken_rule_raises_its_close_code(data: bytes, code: int) -> None:
    reader = FrameReader(max_size=100)
    with pytest.raises(FrameError) as raised:
        reader.feed(data)
    assert raised.value.code == code


def test_an_oversized_message_is_refused_from_its_header_alone() -> None:
    header = bytes((0x81, 0x80 | 127)) + (10**9).to_bytes(8, "big")
    with pytest.raises(FrameError) as raised:
        FrameReader(max_size=65536).feed(header)
    assert raised.value.code == 1009


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", (1005, "")),
        ((1000).to_bytes(2, "big") + b"bye", (1000, "bye")),
        ((4000).to_bytes(2, "big"), (4000, "")),
    ],
)
def test_a_close_payload_gives_its_code_and_reason(
    payload: bytes, expected: tuple[int, str]
) -> None:
    assert parse_close(payload) == expected


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x03", 1002),  # one byte
        ((1005).to_bytes(2, "big"), 1002),  # reserved for "no status"
        ((999).to_bytes(2, "big"), 1002),
        ((2000).to_bytes(2, "big"), 1002),
        ((1000).to_bytes(2, "big") + b"\xff", 1007),  # reason not UTF-8
    ],
)
def test_a_close_payload_that_may_not_be_sent_is_a_fault(payload: bytes, code: int) -> None:
    with pytest.raises(FrameError) as raised:
        parse_close(payload)
    assert raised.value.code == code


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
def test_server_frames_carry_the_length_in_the_shortest_form(length: int) -> None:
    encoded = frame(TEXT, b"x" * length)
    assert encoded[0] == 0x81
    header = 2 if length < 126 else 4 if length < 65536 else 10
    assert len(encoded) == header + length


class RecordingTransport(asyncio.Transport):
    """The I/O edge of a `SocketProtocol`, recording what the protocol asks of it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.reading = True
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True


class ServerState:
    def __init__(self) -> None:
        self.connections: set[object] = set()
        self.tasks: set[object] = set()


async def test_a_client_flooding_frames_is_slowed_by_tcp_not_buffered() -> None:
    transport = RecordingTransport()
    received: list[dict[str, object]] = []
    release = asyncio.Event()

    async def application(scope: object, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await release.wait()  # busy elsewhere while the frames pile up
        while len(received) < 200:
            received.append(await receive())

    timings = SocketTimings(ping_interval=60, pong_timeout=10, close_timeout=1)
    loop = asyncio.get_running_loop()
    socket = SocketProtocol(transport, KEY, ServerState(), timings, 1024, loop)
    socket.start(application, {"type": "websocket"})
    await asyncio.sleep(0.01)  # the answer leaves with the wire's writes, at the turn's end
    assert transport.written.startswith(b"HTTP/1.1 101")
    socket.data_received(b"".join(client_frame(TEXT, b'{"n":%d}' % n) for n in range(200)))
    assert not transport.reading, "reading goes on while 200 messages wait"
    release.set()
    await asyncio.sleep(0.05)
    assert len(received) == 200
    assert transport.reading
    assert [message["text"] for message in received[:2]] == ['{"n":0}', '{"n":1}']


async def _accepted(
    transport: RecordingTransport, max_message: int, read_rate: float = 0.0, read_burst: int = 0
) -> SocketProtocol:
    """A socket whose application accepts and then reads nothing."""

    async def application(scope: object, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.Event().wait()

    timings = SocketTimings(
        ping_interval=60,
        pong_timeout=10,
        close_timeout=0.05,
        read_rate=read_rate,
        read_burst=read_burst,
    )
    loop = asyncio.get_running_loop()
    socket = SocketProtocol(transport, KEY, ServerState(), timings, max_message, loop)
    socket.start(application, {"type": "websocket"})
    await asyncio.sleep(0.01)  # accepted, and the answer written
    return socket


async def test_read_ahead_is_bounded_in_bytes_not_only_in_messages() -> None:
    transport = RecordingTransport()
    socket = await _accepted(transport, 256 * 1024)
    message = client_frame(TEXT, b"x" * 200 * 1024)
    fed = 0
    while transport.reading and fed < 64:
        socket.data_received(message)
        fed += 1
    # Six messages of 200 KiB pass the 1 MiB bound, far below the 64-message one.
    assert fed == 6
    assert socket.queue.size == 6 * 200 * 1024


async def test_reading_pauses_while_writes_are_paused_so_unread_pongs_stop_the_pings() -> None:
    transport = RecordingTransport()
    socket = await _accepted(transport, 1024)
    socket.pause_writing()
    assert not transport.reading
    socket.resume_writing()
    assert transport.reading


async def test_nothing_is_queued_after_the_close_and_a_peer_that_never_answers_is_aborted() -> None:
    transport = RecordingTransport()
    socket = await _accepted(transport, 1024)
    await socket.send({"type": "websocket.close", "code": 1000})
    queued = socket.queue.qsize()
    socket.data_received(client_frame(TEXT, b"late") * 10)
    assert socket.queue.qsize() == queued
    assert not transport.aborted
    await asyncio.sleep(0.2)
    assert transport.aborted


async def test_a_socket_past_its_read_budget_is_not_read_until_the_budget_refills() -> None:
    transport = RecordingTransport()
    # Each frame costs its bytes plus 1 KiB (parsing a frame costs the same at any size).
    socket = await _accepted(transport, 1024, read_rate=10_000, read_burst=10 * 1124)
    ping = client_frame(PING, b"p" * 94)  # 100 bytes on the wire
    for _ in range(9):
        socket.data_received(ping)
    assert transport.reading, "within the burst"
    socket.data_received(ping * 3)
    assert not transport.reading, "past the burst"
    # About 2,250 bytes overdrawn at 10,000 bytes/s: reading resumes some 0.2 s later.
    await asyncio.sleep(0.6)
    assert transport.reading


async def test_the_pongs_to_one_batch_of_pings_leave_in_one_write() -> None:
    transport = RecordingTransport()
    socket = await _accepted(transport, 1024)
    writes: list[bytes] = []
    transport.write = writes.append  # type: ignore[method-assign]
    socket.data_received(client_frame(PING, b"x") * 50)
    assert writes == [(bytes((0x80 | PONG, 1)) + b"x") * 50]


async def test_a_read_of_many_frames_is_parsed_a_bounded_share_per_loop_turn() -> None:
    # Two floods of 2,000 pings each, read in the same turn: each socket parses one
    # share now, stops reading, and the rest follows turn after turn, every ping answered.
    pong = bytes((0x80 | PONG, 1)) + b"x"
    floods = [RecordingTransport(), RecordingTransport()]
    sockets = [await _accepted(transport, 1024) for transport in floods]
    before = [len(transport.written) for transport in floods]
    for socket in sockets:
        socket.data_received(client_frame(PING, b"x") * 2000)
    for transport, start in zip(floods, before, strict=True):
        assert 0 < len(transport.written) - start <= 64 * len(pong)
        assert not transport.reading
    turns = 0
    while not all(t.reading for t in floods) and turns < 1000:
        await asyncio.sleep(0)
        turns += 1
    for transport, start in zip(floods, before, strict=True):
        assert transport.written[start:] == pong * 2000
        assert transport.reading
    # 4,000 frames at most 1,024 a turn (one turn may be taken by the first reads).
    assert turns >= 3


@given(
    frames=st.lists(st.binary(max_size=40), min_size=1, max_size=60),
    limit=st.integers(min_value=1, max_value=10),
)
def test_a_frame_limit_per_call_changes_no_message(frames: list[bytes], limit: int) -> None:
    wire = b"".join(client_frame(TEXT, payload) for payload in frames)
    reader = FrameReader(max_size=1024)
    received = reader.feed(wire, limit)
    assert len(received) <= limit
    while reader.more:
        received += reader.feed(b"", limit)
    assert received == [(TEXT, payload) for payload in frames]


async def test_connections_arriving_at_once_start_a_bounded_share_per_loop_turn() -> None:
    started: list[int] = []

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        started.append(scope["n"])
        await send({"type": "websocket.close"})

    state = ServerState()
    timings = SocketTimings(ping_interval=60, pong_timeout=10, close_timeout=0.05)
    loop = asyncio.get_running_loop()
    sockets = [
        SocketProtocol(RecordingTransport(), KEY, state, timings, 1024, loop) for _ in range(100)
    ]
    for n, socket in enumerate(sockets):
        socket.start(application, {"type": "websocket", "n": n})
    # 100 upgrades answered in one turn: 32 applications start in it, the rest later.
    assert len(state.connections) == 32
    for _ in range(20):
        await asyncio.sleep(0)
    assert sorted(started) == list(range(100))


async def test_a_socket_holds_one_deadline_on_the_shared_wheel_and_none_once_lost() -> None:
    transport = RecordingTransport()
    socket = await _accepted(transport, 1024)
    # Accepted: the next ping is due, on the process's wheel, with no loop timer of its own.
    assert socket in SocketProtocol.deadlines
    socket.connection_lost(None)
    assert socket not in SocketProtocol.deadlines, "the wheel would keep a lost socket alive"
