"""The uvicorn shim: an unsupported uvicorn fails here, loudly, not in production."""

from __future__ import annotations

import asyncio
import inspect
import logging
from types import SimpleNamespace

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tocsin.common import uvicorn_shim
from tocsin.common.uvicorn_shim import (
    SUPPORTED_UVICORN,
    ServerProtocol,
    UnsupportedUvicornError,
    check_version,
)


def test_the_installed_uvicorn_is_one_the_shim_was_read_against() -> None:
    assert check_version() in SUPPORTED_UVICORN


def test_an_unsupported_uvicorn_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uvicorn_shim, "version", lambda name: "0.99.0")
    with pytest.raises(UnsupportedUvicornError, match=r"uvicorn 0\.99\.0 is installed"):
        check_version()


def test_the_internals_the_shim_relies_on_are_where_it_expects_them() -> None:
    """What `ServerProtocol` and `httplimits` read or set on uvicorn's protocol."""
    init = inspect.getsource(HttpToolsProtocol.__init__)
    for attribute in ("self.server_state", "self.connections", "self.parser", "self.pipeline"):
        assert attribute in init, attribute
    for method in (
        "handle_websocket_upgrade",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_message_begin",
        "on_message_complete",
        "send_400_response",
        "timeout_keep_alive_handler",
        "_should_upgrade",
        "_unsupported_upgrade_warning",
        "_unset_keepalive_if_required",
    ):
        assert callable(getattr(HttpToolsProtocol, method, None)), method
    made = inspect.getsource(HttpToolsProtocol.connection_made)
    assert "self.transport = transport" in made
    assert "self.url" in inspect.getsource(HttpToolsProtocol.on_url)


def test_the_internals_the_fast_path_hooks_read_are_where_they_expect_them() -> None:
    """What `between_requests`, `plain_server` and the flow-control hooks read."""
    init = inspect.getsource(HttpToolsProtocol.__init__)
    for attribute in ("self.cycle", "self.flow", "self.access_log", "self.limit_concurrency",
                      "self.root_path"):  # fmt: skip
        assert attribute in init, attribute
    for method in ("pause_reading", "resume_reading"):
        assert callable(getattr(FlowControl, method, None)), method
    assert "self.write_paused = False" in inspect.getsource(FlowControl.__init__)
    assert "total_requests += 1" in inspect.getsource(HttpToolsProtocol.on_response_complete)


class _RecordingTransport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (
            202,
            [
                (b"content-length", b"2"),
                (b"traceparent", b"00-ab-cd-01"),
                (b"content-type", b"application/json"),
            ],
            b"{}",
        ),
        (429, [(b"content-length", b"0"), (b"retry-after", b"3")], b""),
        (
            500,
            [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"21"),
                (b"connection", b"close"),
            ],
            b"Internal Server Error",
        ),
    ],
)
async def test_answer_bytes_are_what_uvicorns_cycle_writes(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    defaults = [(b"date", b"Mon, 30 Nov 2026 05:00:00 GMT"), (b"server", b"uvicorn")]
    transport = _RecordingTransport()
    cycle = RequestResponseCycle(
        scope={"method": "POST", "http_version": "1.1"},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=defaults,
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
    await cycle.send({"type": "http.response.start", "status": status, "headers": headers})
    await cycle.send({"type": "http.response.body", "body": body})

    state = SimpleNamespace(default_headers=defaults, total_requests=0)
    protocol = SimpleNamespace(server_state=state)
    answer = ServerProtocol.answer_bytes(protocol, status, headers, body)  # type: ignore[arg-type]
    assert answer == transport.written
    assert state.total_requests == 1
