"""The client's exceptions, a branch of Tocsin's one tree (`tocsin.common.errors`).

TocsinError              Tocsin's base (`tocsin.common.errors`), re-exported here
├── ConfigError          settings could not be read (`tocsin.common.errors`)
│   └── ConfigurationError   the client was not told where or how to connect
├── UnreachableError     a service did not answer at its address (refused, timeout, DNS)
│   └── StackNotRunningError  the `tocsin dev` the state file names has exited
├── RequestError         a service refused a request (status and problem body)
│   └── NotFoundError    what the request named does not exist (404)
├── FatalCloseError      the gateway closed with a do-not-reconnect code (4400-4499)
│   ├── AuthenticationError   the token was missing or invalid (4401, 4402)
│   ├── TokenExpiredError     the token expired and there is no way to get a new one
│   └── ProtocolError         the client broke the protocol or a limit (4400, 4403, 4413)
└── SubscriptionError    the gateway refused a subscription (`forbidden`, ...)
"""

from __future__ import annotations

from typing import Any

from tocsin.common.errors import ConfigError, TocsinError

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "FatalCloseError",
    "NotFoundError",
    "ProtocolError",
    "RequestError",
    "StackNotRunningError",
    "SubscriptionError",
    "TocsinError",
    "TokenExpiredError",
    "UnreachableError",
]


class ConfigurationError(ConfigError):
    """The client lacks an address or a credential."""


class UnreachableError(TocsinError):
    """A service did not answer: `service` at `url` failed with `reason`."""

    def __init__(self, service: str, url: str, reason: str) -> None:
        super().__init__(f"could not reach {service} at {url}: {reason}")
        self.service = service
        self.url = url
        self.reason = reason


class StackNotRunningError(UnreachableError):
    """The state file `path` names a `tocsin dev` (`pid`) that has exited."""

    def __init__(self, path: object, pid: object) -> None:
        TocsinError.__init__(
            self,
            f"the dev stack is not running (pid {pid} in {path} has exited); "
            "start it with `make run` or pass the service URLs",
        )
        self.service = "tocsin dev"
        self.url = str(path)
        self.reason = "not running"


class RequestError(TocsinError):
    """A service refused a request; `problem` is its problem+json body when it had one."""

    def __init__(self, status: int, message: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem


class NotFoundError(RequestError):
    """The alert, silence, key or dead letter a request named does not exist."""


class FatalCloseError(TocsinError):
    """The gateway closed the socket with a code that forbids reconnecting."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class AuthenticationError(FatalCloseError):
    """The gateway refused the token (missing, malformed, bad signature, audience...)."""


class TokenExpiredError(FatalCloseError):
    """The token expired and the stream was given a fixed token, not a token source."""


class ProtocolError(FatalCloseError):
    """The gateway closed for a protocol violation, a too large frame or a forbidden origin."""


class SubscriptionError(TocsinError):
    """The gateway answered a subscribe with an `error` frame; `code` is its stable code."""

    def __init__(self, channel: str, code: str, message: str) -> None:
        super().__init__(f"{channel}: {code}: {message}")
        self.channel = channel
        self.code = code
