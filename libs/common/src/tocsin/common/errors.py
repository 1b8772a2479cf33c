"""Tocsin's exceptions, as one tree.

Catch a branch rather than a tuple of leaves; each module that raises a leaf
also exports it (`tocsin.common.auth.TokenError` is this `TokenError`).

TocsinError
├── ConfigError (ValueError)          settings or installation wrong: the process does not start
│   └── UnsupportedUvicornError (RuntimeError)  a uvicorn the shim was not checked against
├── InvalidInputError                 what a client sent is refused (an HTTP 4xx problem)
│   ├── InvalidBodyError (ValueError)      a body that does not decode into the model
│   ├── InvalidChannelError (ValueError)   a channel name outside the channel rule
│   ├── UnsupportedRegexError (ValueError) a pattern RE2 cannot compile
│   └── LimitExceededError            a request broke a bound (bytes, fields, pipelining)
├── CredentialError                   a credential was refused (HTTP 401, WebSocket 4401)
│   ├── TokenError                    a JWT refused, with a stable `code`
│   └── InvalidKeyError (ValueError)  not a well-formed API key, or a bad producer name
├── StoreError                        Redis failed a command
│   ├── RedisReplyError               Redis answered with an error reply
│   ├── StoreUnavailableError (ConnectionError)  Redis could not be reached or stopped
│   │                                 answering before the command was sent, or on a read
│   └── OutcomeUnknownError (ConnectionError)  the connection failed after the write:
│                                     Redis may or may not have run the command
└── RemoteError                       a system Tocsin calls out to (a receiver, another
                                      Tocsin service) failed, refused or is busy

Services derive their own errors from these branches (the notifier's
`DeliveryError` is a `RemoteError`, ingest's `AuthError` a `CredentialError`,
the gateway's `FrameError` an `InvalidInputError`, ...).

The builtin bases (`ValueError`, `ConnectionError`) stay where callers and
libraries rely on them (a `ValueError` from a parser, `ConnectionError` for
retry logic). Errors of dependencies (redis-py, PyJWT, msgspec, RE2) are
translated into these where Tocsin's own code meets them; the boundaries
translate these for people: an RFC 9457 problem on HTTP, a close code on
WebSocket, one line on stderr from the `tocsin` command. `FieldError`, what
an `InvalidBodyError` carries, is a value rather than an exception.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ConfigError",
    "CredentialError",
    "FieldError",
    "InvalidBodyError",
    "InvalidChannelError",
    "InvalidInputError",
    "InvalidKeyError",
    "LimitExceededError",
    "OutcomeUnknownError",
    "RedisReplyError",
    "RemoteError",
    "StoreError",
    "StoreUnavailableError",
    "TocsinError",
    "TokenError",
    "UnsupportedRegexError",
    "UnsupportedUvicornError",
]


class TocsinError(Exception):
    """Base of every error Tocsin raises."""


class ConfigError(TocsinError, ValueError):
    """One or more environment variables could not be read into settings."""


class UnsupportedUvicornError(ConfigError, RuntimeError):
    """The installed uvicorn is not one whose internals `tocsin.common.uvicorn_shim` was
    checked against."""


class InvalidInputError(TocsinError):
    """What a client sent is refused; the boundary answers it with a 4xx."""


class FieldError(msgspec.Struct):
    """One reason a request body was refused, with the JSON path it concerns."""

    path: str
    reason: str


class InvalidBodyError(InvalidInputError, ValueError):
    """A request body that does not decode into the expected model."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.reason}" for e in errors))
        self.errors = errors


class InvalidChannelError(InvalidInputError, ValueError):
    """A channel name outside `tocsin.common.events.CHANNEL_PATTERN`."""


class UnsupportedRegexError(InvalidInputError, ValueError):
    """A pattern RE2 cannot compile: bad syntax, a construct RE2 lacks, or too large."""


class LimitExceededError(InvalidInputError):
    """A request broke a limit; the connection answers `status` and closes."""

    def __init__(self, status: int, kind: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail


class CredentialError(TocsinError):
    """A credential (token or API key) was refused."""


class TokenError(CredentialError):
    """A token that was refused; `code` is stable and documented."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InvalidKeyError(CredentialError, ValueError):
    """A string that is not a well-formed API key, or a bad producer name."""


class StoreError(TocsinError):
    """Redis, Tocsin's one store, failed a command."""


class RedisReplyError(StoreError):
    """Redis answered a command with an error reply."""


class StoreUnavailableError(StoreError, ConnectionError):
    """Redis could not be reached, or stopped answering, where a retry is safe: the command
    was not sent, or it only read."""


class OutcomeUnknownError(StoreError, ConnectionError):
    """The connection failed after the command was written: Redis may or may not have run it."""


class RemoteError(TocsinError):
    """A system Tocsin calls out to (a receiver, another Tocsin service) failed or refused."""
