"""The sans-IO framing against RFC 6455's own example and against the `websockets` library."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame as LibraryFrame
from websockets.frames import Opcode

from tocsin.gateway.rfc6455 import (
    TEXT,
    FrameReader,
    accept_answer,
    frame,
    handshake_key,
    offered_subprotocols,
)


def test_the_handshake_answers_the_rfc_example_key_with_its_accept_value() -> None:
    # RFC 6455 section 1.3: this key's Sec-WebSocket-Accept.
    key, refusal = handshake_key(
        [(b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"13")]
    )
    assert (key, refusal) == (b"dGhlIHNhbXBsZSBub25jZQ==", "")
    assert key is not None
    answer = accept_answer(key, "tocsin.v1")
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert answer.endswith(b"Sec-WebSocket-Protocol: tocsin.v1\r\n\r\n")


def test_a_handshake_without_version_13_or_a_16_byte_key_is_refused() -> None:
    assert handshake_key([(b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")]) == (None, "426")
    key, refusal = handshake_key(
        [(b"sec-websocket-key", b"c2hvcnQ="), (b"sec-websocket-version", b"13")]
    )
    assert key is None
    assert "16" in refusal


def test_offered_subprotocols_are_read_across_headers() -> None:
    headers = [(b"sec-websocket-protocol", b"tocsin.v1, bearer.x"), (b"x", b"y")]
    assert offered_subprotocols(headers) == ["tocsin.v1", "bearer.x"]


@given(payload=st.binary(max_size=70_000))
def test_frames_the_library_masks_read_back_whole_and_ours_read_as_the_library_builds(
    payload: bytes,
) -> None:
    masked = LibraryFrame(Opcode.BINARY, payload).serialize(mask=True)
    assert FrameReader(1 << 20).feed(masked) == [(Opcode.BINARY.value, payload)]
    text = LibraryFrame(Opcode.TEXT, payload).serialize(mask=False)
    assert frame(TEXT, payload) == text
