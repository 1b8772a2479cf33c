"""The client's exceptions.

TocsinError
├── ConfigurationError   the client was not told where or how to connect
├── RequestError         an HTTP call to ingest failed (status and problem body)
└── FatalCloseError      the gateway closed with a do-not-reconnect code
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigurationError", "FatalCloseError", "RequestError", "TocsinError"]


class TocsinError(Exception):
    """Base of every error the client raises."""


class ConfigurationError(TocsinError):
    """The client lacks an address or a credential."""


class RequestError(TocsinError):
    """Ingest refused a request; `problem` is its problem+json body when it had one."""

    def __init__(self, status: int, message: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.problem = problem


class FatalCloseError(TocsinError):
    """The gateway closed the socket with a code that forbids reconnecting."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason
