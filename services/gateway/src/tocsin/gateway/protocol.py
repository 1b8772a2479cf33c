"""The WebSocket protocol's vocabulary: close codes, error codes and server frames.

Close codes come in two classes that clients act on without knowing each code:
4000-4399 "reconnect and resume" and 4400-4499 "do not reconnect". docs/protocol.md
lists every code, frame and field; the names here are the stable `reason` strings.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = [
    "CloseCode",
    "ErrorCode",
    "encode",
    "error_frame",
    "is_reconnect_class",
]

_encoder = msgspec.json.Encoder()


class CloseCode(enum.IntEnum):
    """Close codes the gateway sends; the member name, lower-cased, is the close reason."""

    # Reconnect and resume: the client backs off, reconnects and resumes its offsets.
    SERVER_RESTART = 4000
    SLOW_CONSUMER = 4001
    HEARTBEAT_TIMEOUT = 4002
    TOKEN_EXPIRED = 4003
    TOO_MANY_CONNECTIONS = 4004
    BACKEND_UNAVAILABLE = 4005
    # Do not reconnect: the same request would be refused again.
    PROTOCOL_VIOLATION = 4400
    TOKEN_INVALID = 4401
    TOKEN_MISSING = 4402
    ORIGIN_FORBIDDEN = 4403
    INSUFFICIENT_SCOPE = 4406
    FRAME_TOO_LARGE = 4413

    @property
    def reason(self) -> str:
        return self.name.lower()


def is_reconnect_class(code: int) -> bool:
    """Whether a client should reconnect after `code` (every code outside 4400-4499)."""
    return not 4400 <= code <= 4499


class ErrorCode(enum.StrEnum):
    """`code` of an `error` frame; the socket stays open after one."""

    BAD_REQUEST = "bad_request"
    BAD_CHANNEL = "bad_channel"
    FORBIDDEN = "forbidden"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    NOT_SUBSCRIBED = "not_subscribed"
    ALREADY_SUBSCRIBED = "already_subscribed"
    TOKEN_INVALID = "token_invalid"


def encode(frame: dict[str, Any]) -> str:
    """One server frame as JSON text."""
    return _encoder.encode(frame).decode()


def error_frame(code: str, message: str, **extra: Any) -> str:
    """The one `error` frame builder: `code` is an `ErrorCode` on an open session, or
    the token error or close reason that refused the socket before it had one."""
    return encode({"type": "error", "code": str(code), "message": message, **extra})
