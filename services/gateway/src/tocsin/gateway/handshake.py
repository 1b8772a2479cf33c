"""A new connection's first read: a plain WebSocket upgrade skips uvicorn's HTTP protocol.

Most connections a gateway accepts are WebSocket upgrades, and each costs
uvicorn's httptools protocol a parser, a dozen objects, its scope dict and
callbacks per header, then the upgrade checks walk the headers again; that was
a quarter of a connect's CPU. `FirstRead` is what uvicorn creates per
connection instead: it keeps the connection's idle deadline and looks at the
first read only. When that read is exactly one complete upgrade request in
the plainest form (`read_upgrade`) to the socket path, with a valid key, the
socket is opened at once. Anything else -- another path or method, a request
split over reads, bytes after the head, a header `read_upgrade` is not sure
of, a refusal to answer -- goes, with the read and the same idle deadline, to
the HTTP protocol (`LimitedHttpToolsProtocol`, with every limit and answer of
its own), as if it had read it first.

`read_upgrade` is hand-written for speed: it reads what it accepts the way
httptools and uvicorn do (tests compare the two on generated requests) and
declines the rest, so it never decides a refusal. `query_token` likewise reads
the `token` parameter of a plain query string itself and leaves any other to
`urllib.parse.parse_qs`.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qs

from tocsin.common.httplimits import HttpLimits, LimitedHttpToolsProtocol
from tocsin.common.uvicorn_shim import ServerState, UpgradeRequest

__all__ = ["FirstRead", "OpenSocket", "query_token", "read_upgrade"]

_END = b"\r\n\r\n"
_REQUEST_START = b"GET "
_REQUEST_END = b" HTTP/1.1"
# Bytes a plain request head, target and header name consist of (what is deleted by
# `translate` must leave nothing): visible ASCII, spaces and line ends; a target of
# visible ASCII without `#`; a name of RFC 9110 token characters.
_TARGET_BYTES = bytes(c for c in range(0x21, 0x7F) if c != ord("#"))
_NAME_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HEAD_BYTES = bytes(range(0x20, 0x7F)) + b"\r\n"
# The headers a plain upgrade must have once each, and those that mean more than a plain
# upgrade reads (a body), which are left to httptools.
_SPECIAL_HEADERS = frozenset((b"connection", b"upgrade", b"content-length", b"transfer-encoding"))
# Query bytes that `parse_qs` takes as they are (no `%` escape, no `+` for a space).
_PLAIN_QUERY = b"&=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def query_token(query: bytes) -> str:
    """The first non-empty `token` parameter of `query`, as `parse_qs` reads it, or ""."""
    if query.translate(None, _PLAIN_QUERY):
        # Escapes, `+` or other characters: parse_qs decodes them.
        return str(parse_qs(query.decode("latin-1")).get("token", [""])[0])
    for pair in query.split(b"&"):
        if pair.startswith(b"token=") and len(pair) > 6:
            return pair[6:].decode("latin-1")
    return ""


def read_upgrade(data: bytes, limits: HttpLimits) -> UpgradeRequest | None:
    """The WebSocket upgrade request `data` is, read as uvicorn's httptools protocol reads
    it, or None: `data` is not exactly one plain, complete upgrade request within `limits`.

    Plain: `GET <target> HTTP/1.1`, each header `name: value` with one space, no empty
    value, no space at either end of one, only visible ASCII, one `Connection` naming
    `upgrade` among its tokens and one `Upgrade: websocket`, no body headers.
    """
    if (
        len(data) > limits.max_head_bytes
        or data.find(_END) != len(data) - 4
        # Every byte visible ASCII, a space or a line end, and every line end a CRLF.
        or data.translate(None, _HEAD_BYTES)
        or data.count(b"\n") != data.count(b"\r\n")
        or data.count(b"\r") != data.count(b"\r\n")
    ):
        return None
    lines = data[:-4].split(b"\r\n")
    request_line = lines[0]
    if not (request_line.startswith(_REQUEST_START) and request_line.endswith(_REQUEST_END)):
        return None
    url = request_line[4:-9]
    if (
        url[:1] != b"/"
        or len(url) > limits.max_url_bytes
        or url.translate(None, _TARGET_BYTES)
        or len(lines) - 1 > limits.max_headers
    ):
        return None
    headers: list[tuple[bytes, bytes]] = []
    connection_upgrades = upgrades = 0
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        # No ": " leaves `value` empty; a space next to it is more than one.
        if not value or not name or value[0] == 32 or value[-1] == 32:
            return None
        if name.translate(None, _NAME_BYTES):
            return None
        name = name.lower()
        if name in _SPECIAL_HEADERS:
            if name == b"connection":
                lowered = value.lower()
                if lowered != b"upgrade" and b"upgrade" not in [
                    token.strip() for token in lowered.split(b",")
                ]:
                    return None
                connection_upgrades += 1
            elif name == b"upgrade":
                if value.lower() != b"websocket":
                    return None
                upgrades += 1
            else:
                return None  # a body header
        headers.append((name, value))
    if connection_upgrades != 1 or upgrades != 1:
        return None
    target, _, query = url.partition(b"?")
    return UpgradeRequest("GET", target, query, headers)


class OpenSocket(Protocol):
    """What opens the socket for a plain upgrade, or declines it (False): the HTTP
    protocol then reads the request and answers it."""

    def __call__(
        self,
        transport: asyncio.Transport,
        state: ServerState,
        request: UpgradeRequest,
        loop: asyncio.AbstractEventLoop,
    ) -> bool: ...


class FirstRead(asyncio.Protocol):
    """A connection until its first read (see the module's docstring); `serving` makes a
    subclass for one server."""

    fallback: ClassVar[type[LimitedHttpToolsProtocol]]
    open_socket: ClassVar[OpenSocket]

    __slots__ = ("_app_state", "_config", "_idle", "_idle_at", "_loop", "_state", "transport")

    @classmethod
    def serving(
        cls, fallback: type[LimitedHttpToolsProtocol], open_socket: OpenSocket
    ) -> type[FirstRead]:
        """A subclass handing plain upgrades to `open_socket`, everything else to `fallback`."""
        return type(
            cls.__name__,
            (cls,),
            {
                "fallback": fallback,
                "open_socket": staticmethod(open_socket),
                "__module__": cls.__module__,
                "__slots__": (),
            },
        )

    def __init__(
        self,
        config: Any,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # uvicorn's protocol factory signature; the HTTP protocol gets the same on fallback.
        self._config = config
        self._state = server_state
        self._app_state = app_state
        self._loop = _loop or asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._idle_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # In uvicorn's set, so that its shutdown closes this connection too.
        self._state.connections.add(self)
        # The idle (keep-alive) timeout applies before a connection's first request too.
        self._idle_at = self._loop.time() + self.fallback.limits.keepalive_timeout
        self._idle = self._loop.call_at(self._idle_at, self._idle_expired)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self._state.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        request = read_upgrade(data, self.fallback.limits)
        if request is not None and self.open_socket(transport, self._state, request, self._loop):
            return
        self._fall_back(transport).data_received(data)

    def _fall_back(self, transport: asyncio.Transport) -> LimitedHttpToolsProtocol:
        """The HTTP protocol takes the connection over, with this one's idle deadline."""
        protocol = self.fallback(
            config=self._config,
            server_state=self._state,
            app_state=self._app_state,
            _loop=self._loop,
        )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.idle_until(self._idle_at)
        return protocol

    def _idle_expired(self) -> None:
        # Nothing was read and nothing written: the close is immediate.
        self._idle = None
        self._state.connections.discard(self)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def shutdown(self) -> None:
        """uvicorn's exit: a connection that has sent nothing closes."""
        if self.transport is not None:
            self.transport.close()
