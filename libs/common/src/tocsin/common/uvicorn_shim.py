"""Every touch of uvicorn's internals, in one place, pinned to the versions it was read against.

Tocsin's HTTP servers extend uvicorn's httptools protocol, which is not a
public API: `tocsin.common.httplimits` bounds its parser callbacks, the gateway
takes WebSocket upgrades over from it, and ingest wraps its transport and
answers plain producer POSTs itself (its fast path). Those modules reach
uvicorn only through `ServerProtocol` here, whose hooks name what they need
(`upgrade_request`, `hand_over`, `wrap_transport`, the server state; for the
fast path `between_requests`, `plain_server`, `answer_bytes` -- the bytes
uvicorn's request/response cycle would write -- and uvicorn's flow control).
`ServerProtocol.connection_made` is uvicorn's, but reads the connection's
addresses from what the event loop read at accept rather than from the socket.
`check_version` refuses a uvicorn this module was not checked against;
`tests/test_uvicorn_shim.py` fails on one too, before anything subtler breaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, ClassVar, Protocol, TypeVar

from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl

from tocsin.common.errors import UnsupportedUvicornError

__all__ = [
    "STATUS_LINE",
    "SUPPORTED_UVICORN",
    "ServerProtocol",
    "ServerState",
    "UnsupportedUvicornError",
    "UpgradeRequest",
    "check_version",
]

# The uvicorn releases whose httptools protocol this module was read against
# (constraints.txt pins one of them). A new release needs a read of
# `httptools_impl.py` before it is added here.
SUPPORTED_UVICORN = frozenset({"0.54.0"})


P = TypeVar("P", bound=asyncio.Protocol)


def check_version() -> str:
    """The installed uvicorn's version; raises `UnsupportedUvicornError` if unsupported."""
    installed = version("uvicorn")
    if installed not in SUPPORTED_UVICORN:
        raise UnsupportedUvicornError(
            f"uvicorn {installed} is installed; tocsin.common.uvicorn_shim supports "
            f"{', '.join(sorted(SUPPORTED_UVICORN))}: read uvicorn's httptools_impl.py "
            "against the shim before adding it"
        )
    return installed


class ServerState(Protocol):
    """uvicorn's per-server state: the open connections and running tasks it waits on."""

    connections: set[Any]
    tasks: set[asyncio.Task[None]]


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """An HTTP request asking to upgrade, as uvicorn's parser has read it."""

    method: str
    target: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]


class ServerProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, with the hooks Tocsin's servers use."""

    # A transport proxy to write through (ingest's coalescing), or None for the real one.
    wrap_transport: ClassVar[Any] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn's `connection_made`, but for where the addresses come from: uvicorn
        # asks the socket (under uvloop 4 getsockname and a getpeername per
        # connection, ~5 % of a connect's CPU) for what the event loop already read
        # at accept and keeps in the transport's extra info.
        wrap = type(self).wrap_transport
        if wrap is not None:
            transport = wrap(transport)
        self.connections.add(self)
        self.transport = transport
        self.flow = FlowControl(transport)
        self.server = local_address(transport)
        self.client = remote_address(transport)
        self.scheme = "https" if is_ssl(transport) else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = "%s:%d - " % self.client if self.client else ""  # noqa: UP031 (uvicorn's)
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)

    def upgrade_request(self) -> UpgradeRequest:
        """The request being upgraded (call from `handle_websocket_upgrade`)."""
        target, _, query = bytes(self.url).partition(b"?")
        return UpgradeRequest(self.scope["method"], target, query, self.headers)

    def hand_over(self, make: Callable[[asyncio.Transport, ServerState], P]) -> P:
        """Give the connection to the protocol `make` builds from the transport and
        uvicorn's server state (whose sets it must join and leave itself)."""
        self.connections.discard(self)
        # The parser and this protocol refer to each other: part them now,
        # rather than leave a cycle per connection to the garbage collector.
        self.parser = None  # type: ignore[assignment]
        transport = self.transport
        protocol = make(transport, self.server_state)
        transport.set_protocol(protocol)
        return protocol

    def release_parser(self) -> asyncio.Transport:
        """Stop parsing (an answer written by hand follows); returns the transport."""
        self.parser = None  # type: ignore[assignment]
        return self.transport

    # -- for a subclass that answers some requests itself (ingest's fast path) --------

    def between_requests(self) -> bool:
        """Whether uvicorn has no request in hand: none being answered, none queued."""
        cycle = self.cycle
        return (cycle is None or cycle.response_complete) and not self.pipeline

    def plain_server(self) -> bool:
        """Whether uvicorn's answers are plain: no access log, no concurrency limit, no
        root path (which each add per-request work to what `answer_bytes` writes)."""
        return not self.access_log and self.limit_concurrency is None and not self.root_path

    def answer_bytes(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        """The bytes uvicorn writes for an answer with a Content-Length to a kept-alive
        HTTP/1.1 request (`headers`: lower-case names, valid values), and counts it."""
        state = self.server_state
        state.total_requests += 1
        defaults = state.default_headers
        if _default_head[0] is not defaults:  # uvicorn replaces the list once a second (Date)
            _default_head[:] = [defaults, b"".join(n + b": " + v + b"\r\n" for n, v in defaults)]
        head = [STATUS_LINE[status], _default_head[1]]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head += (b"\r\n", body)
        return b"".join(head)

    def pause_reading(self) -> None:
        """Stop reading from the client (uvicorn's flow control, shared with its cycles)."""
        self.flow.pause_reading()

    def resume_reading(self) -> None:
        self.flow.resume_reading()

    def writes_paused(self) -> bool:
        """Whether the client has stopped reading what it was sent (uvicorn's flow control)."""
        return self.flow.write_paused


def local_address(transport: asyncio.BaseTransport) -> tuple[str, int | None] | None:
    """uvicorn's `get_local_addr`, from the address the event loop read at accept."""
    info = transport.get_extra_info("sockname")
    if isinstance(info, tuple):  # (host, port) or, for IPv6, (host, port, flow, scope)
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):  # a Unix socket's path
        return (info, None)
    return get_local_addr(transport) if info is None else None  # type: ignore[arg-type]


def remote_address(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
    """uvicorn's `get_remote_addr`, from the address the event loop read at accept."""
    info = transport.get_extra_info("peername")
    if isinstance(info, tuple):
        return (str(info[0]), int(info[1]))
    # A Unix socket's peer (a path or "") has no address, as for uvicorn.
    return get_remote_addr(transport) if info is None else None  # type: ignore[arg-type]


# uvicorn's current default headers and their encoding (one server per process).
_default_head: list[Any] = [None, b""]
