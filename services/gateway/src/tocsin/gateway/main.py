"""`tocsin gateway`: run the gateway."""

from __future__ import annotations

from tocsin.common.config import load_settings
from tocsin.common.logging import configure_logging
from tocsin.common.ops import serve
from tocsin.gateway.app import build_app
from tocsin.gateway.settings import DEFAULT_PORT, GatewaySettings

__all__ = ["run"]


def run() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging("gateway", settings.log_format, settings.log_level)
    serve(build_app(settings), settings.host, settings.port or DEFAULT_PORT, ws="websockets-sansio")
