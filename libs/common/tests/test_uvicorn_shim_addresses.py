"""The shim's connection addresses are uvicorn's, over real connections on both event loops."""

from __future__ import annotations

import ast
import asyncio
import inspect
import socket
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tocsin.common.uvicorn_shim import ServerProtocol

Address = tuple[str, int | None] | None
LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def _scope_addresses(
    protocol: type[HttpToolsProtocol], family: str, where: Path
) -> tuple[Address, Address, Address]:
    """(scope server, scope client, the client socket's own address) for one real request."""
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()

    def make() -> HttpToolsProtocol:
        return protocol(config=config, server_state=state, app_state={})

    loop = asyncio.get_running_loop()
    if family == "unix":
        path = str(where / "s")
        server = await loop.create_unix_server(make, path)
        reader, writer = await asyncio.open_unix_connection(path)
    else:
        host = "::1" if family == "ipv6" else "127.0.0.1"
        server = await loop.create_server(make, host, 0)
        reader, writer = await asyncio.open_connection(host, server.sockets[0].getsockname()[1])
    try:
        own = writer.get_extra_info("sockname")
        writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 204")
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
    (scope,) = scopes
    own_address = (own[0], own[1]) if isinstance(own, tuple) else None
    return scope["server"], scope["client"], own_address


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("family", ["ipv4", "ipv6", "unix"])
def test_the_scope_addresses_are_the_ones_uvicorn_gives(
    loop: str, family: str, tmp_path: Path
) -> None:
    if family == "ipv6" and not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback to connect over")
    run = LOOPS[loop]
    server, client, own = run(_scope_addresses(ServerProtocol, family, tmp_path))
    their_server, their_client, their_own = run(
        _scope_addresses(HttpToolsProtocol, family, tmp_path)
    )
    # Each connection has its own port (and each TCP server its own listening port):
    # compare everything else, and the ports against the sockets themselves.
    if family == "unix":
        unix = ((str(tmp_path / "s"), None), None)
        assert (server, client) == (their_server, their_client) == unix
        return
    assert client == own
    assert their_client == their_own
    assert server is not None
    assert their_server is not None
    assert (server[0], type(server[1])) == (their_server[0], type(their_server[1]))
    assert server[0] == ("::1" if family == "ipv6" else "127.0.0.1")


class _CountingTransport:
    """A transport that counts which extra info its protocol asks for."""

    asked: list[str]

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        _CountingTransport.asked = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        _CountingTransport.asked.append(name)
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CountingProtocol(ServerProtocol):
    wrap_transport = _CountingTransport


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_connection_reads_its_addresses_from_the_loop_not_the_socket(
    loop: str, tmp_path: Path
) -> None:
    server, client, own = LOOPS[loop](_scope_addresses(_CountingProtocol, "ipv4", tmp_path))
    assert client == own
    assert server is not None
    # Asking for the "socket" is what costs uvicorn its getsockname/getpeername calls.
    assert "socket" not in _CountingTransport.asked
    assert {"sockname", "peername"} <= set(_CountingTransport.asked)


def _body(function: Callable[..., Any]) -> list[ast.stmt]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    definition = tree.body[0]
    assert isinstance(definition, ast.FunctionDef)
    return definition.body


def test_the_shims_connection_made_is_uvicorns_but_for_the_addresses() -> None:
    """A uvicorn whose `connection_made` does more (or else) fails here."""
    theirs = ast.dump(ast.Module(body=_body(HttpToolsProtocol.connection_made), type_ignores=[]))
    theirs = theirs.replace("'get_local_addr'", "'local_address'")
    theirs = theirs.replace("'get_remote_addr'", "'remote_address'")
    # Ours first wraps the transport (`wrap_transport`), in two statements.
    ours = ast.dump(ast.Module(body=_body(ServerProtocol.connection_made)[2:], type_ignores=[]))
    assert ours == theirs
