"""RFC 6455 framing, sans I/O: bytes in, messages and answers out.

Pure functions and one parser class, shared by the gateway's socket protocol
(`websocket.py`, the I/O glue) and the frames it pre-encodes (`frames.py`):
the opening handshake's key check and answer, client frames parsed and
unmasked into whole messages, server frames built, close payloads read.
Nothing here touches a transport or the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from tocsin.common.errors import InvalidInputError

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "NO_STATUS",
    "PING",
    "PONG",
    "TEXT",
    "FrameError",
    "FrameReader",
    "accept_answer",
    "close_frame",
    "frame",
    "frame_header",
    "handshake_key",
    "offered_subprotocols",
    "parse_close",
    "unmask",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CONTINUATION = 0x1, 0x2, 0x0
CLOSE, PING, PONG = 0x8, 0x9, 0xA
# Codes a peer may send in a close frame (RFC 6455 7.4), besides 3000-4999.
_PEER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})
NO_STATUS = 1005


class FrameError(InvalidInputError):
    """The peer broke the framing rules; `code` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR `payload` with the repeating 4-byte `mask`.

    websockets' C `apply_mask` (its pure-Python one where the C extension is not
    built): under a flood of 60 KiB frames, unmasking in Python was a third of
    the gateway's CPU; in C it costs 50 times less.
    """
    return apply_mask(payload, mask) if payload else payload


def frame_header(opcode: int, length: int) -> bytes:
    """The header of an unmasked, final server frame carrying `length` bytes (RFC 6455 5.2)."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65536:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big")


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """An unmasked, final server frame."""
    return frame_header(opcode, len(payload)) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(CLOSE, code.to_bytes(2, "big") + reason.encode()[:123])


# A masked, final pong with no payload: two header bytes and the four of its mask.
_EMPTY_PONG_SIZE = 6
_EMPTY_PONG_FIRST = 0x80 | PONG
_EMPTY_PONG_SECOND = 0x80
_EMPTY_PONG = (PONG, b"")


class FrameReader:
    """Client frames in, whole messages and control frames out (pure: no I/O).

    `feed` returns `(opcode, payload)` pairs: complete text or binary messages
    (continuations joined) and control frames, unmasked. It raises `FrameError`
    at the first broken rule, and refuses an oversized message from its header,
    before buffering its payload. It parses at most `max_frames` frames per call
    and keeps the rest: `frames` says how many it parsed, `more` whether it
    stopped at that bound (call again, with `b""` if nothing new came).
    """

    __slots__ = (
        "_buffer",
        "_fragments",
        "_fragments_size",
        "_message_opcode",
        "frames",
        "max_size",
        "more",
    )

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._fragments_size = 0
        self._message_opcode = 0
        self.frames = 0
        self.more = False

    def feed(self, data: bytes, max_frames: int = 1 << 30) -> list[tuple[int, bytes]]:
        # A read that is one empty pong, whole (the answer to every heartbeat ping, the
        # bulk of an idle gateway's reads), skips the general parse; `parse` is what
        # it stands for, and the tests hold the two to the same answers.
        if (
            len(data) == _EMPTY_PONG_SIZE
            and data[0] == _EMPTY_PONG_FIRST
            and data[1] == _EMPTY_PONG_SECOND
            and max_frames > 0
            and not self._buffer
        ):
            self.frames = 1
            self.more = False
            return [_EMPTY_PONG]
        return self.parse(data, max_frames)

    def parse(self, data: bytes, max_frames: int = 1 << 30) -> list[tuple[int, bytes]]:
        """`feed` without its fast path: every frame through the general parser."""
        buffer = self._buffer + data if self._buffer else data
        out: list[tuple[int, bytes]] = []
        position = 0
        end = len(buffer)
        frames = 0
        self.more = False
        while end - position >= 2:
            if frames == max_frames:
                self.more = True
                break
            first, second = buffer[position], buffer[position + 1]
            opcode = first & 0x0F
            length = second & 0x7F
            header = 2
            if length == 126:
                header = 4
                if end - position < header:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
            elif length == 127:
                header = 10
                if end - position < header:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
            self._check_header(first, second, opcode, length)
            total = header + 4 + length
            if end - position < total:
                break
            mask = buffer[position + header : position + header + 4]
            payload = unmask(buffer[position + header + 4 : position + total], mask)
            position += total
            frames += 1
            message = self._take(first & 0x80, opcode, payload)
            if message is not None:
                out.append(message)
        self._buffer = buffer[position:] if position < end else b""
        self.frames = frames
        return out

    def _check_header(self, first: int, second: int, opcode: int, length: int) -> None:
        if first & 0x70:
            raise FrameError(1002, "reserved bits are set, and no extension was agreed")
        if not second & 0x80:
            raise FrameError(1002, "client frames must be masked")
        if opcode >= 0x8:
            if opcode not in (CLOSE, PING, PONG):
                raise FrameError(1002, f"unknown opcode {opcode:#x}")
            if not first & 0x80 or length > 125:
                raise FrameError(1002, "control frames are final and at most 125 bytes")
        elif opcode not in (TEXT, BINARY, CONTINUATION):
            raise FrameError(1002, f"unknown opcode {opcode:#x}")
        elif length + self._fragments_size > self.max_size:
            raise FrameError(1009, f"messages are limited to {self.max_size} bytes")

    def _take(self, final: int, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode >= 0x8:
            return opcode, payload
        fragments = self._fragments
        if opcode == CONTINUATION:
            if fragments is None:
                raise FrameError(1002, "a continuation frame without a message to continue")
            fragments.append(payload)
            self._fragments_size += len(payload)
            if not final:
                return None
            self._fragments, self._fragments_size = None, 0
            return self._message_opcode, b"".join(fragments)
        if fragments is not None:
            raise FrameError(1002, "a new message began before the last one ended")
        if final:
            return opcode, payload
        self._fragments, self._fragments_size = [payload], len(payload)
        self._message_opcode = opcode
        return None


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a peer's close frame; `FrameError` if malformed."""
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(1002, "a close payload of one byte")
    code = int.from_bytes(payload[:2], "big")
    if code not in _PEER_CLOSE_CODES and not 3000 <= code <= 4999:
        raise FrameError(1002, f"close code {code} may not be sent")
    try:
        return code, payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(1007, "the close reason is not UTF-8") from None


def handshake_key(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, str]:
    """The client's `Sec-WebSocket-Key`, or None and why the handshake is refused."""
    key = version = None
    for name, value in headers:
        if name == b"sec-websocket-key":
            key = value.strip()
        elif name == b"sec-websocket-version":
            version = value.strip()
    if version != b"13":
        return None, "426"
    try:
        if key is None or len(base64.b64decode(key, validate=True)) != 16:
            return None, "a Sec-WebSocket-Key of 16 base64-encoded bytes is required"
    except binascii.Error:
        return None, "Sec-WebSocket-Key is not base64"
    return key, ""


def offered_subprotocols(headers: list[tuple[bytes, bytes]]) -> list[str]:
    offered: list[str] = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            offered += [part.strip() for part in value.decode("latin-1").split(",")]
    return offered


def accept_answer(key: bytes, subprotocol: str | None) -> bytes:
    """The server's `101 Switching Protocols` answer to a handshake with `key`."""
    # RFC 6455 fixes SHA-1 here; it proves only that the server read the key.
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    lines = [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n"
    ]
    if subprotocol:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode() + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
