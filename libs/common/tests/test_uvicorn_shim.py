"""The uvicorn shim: an unsupported uvicorn fails here, loudly, not in production."""

from __future__ import annotations

import inspect

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tocsin.common import uvicorn_shim
from tocsin.common.uvicorn_shim import SUPPORTED_UVICORN, UnsupportedUvicornError, check_version


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
