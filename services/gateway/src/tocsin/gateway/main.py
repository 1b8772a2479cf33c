"""`tocsin gateway`: run the gateway, draining its sockets on SIGTERM.

uvicorn's own shutdown closes every socket at once with 1012; the gateway
instead fails `/readyz`, refuses new upgrades and closes its sockets with the
`server_restart` code spread over `drain_window`, and only then lets uvicorn
stop. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn

from tocsin.common.config import load_settings
from tocsin.common.httplimits import LimitedHttpToolsProtocol
from tocsin.common.logging import configure_logging
from tocsin.common.ops import RestingServer, metrics_app, serve_in_thread, tune_gc
from tocsin.common.telemetry import instrument_app, setup_observability
from tocsin.gateway.app import SOCKET_PATH, SocketsFirst, build_app
from tocsin.gateway.node import Node
from tocsin.gateway.settings import DEFAULT_PORT, GatewaySettings
from tocsin.gateway.websocket import SocketTimings, upgrade_protocol

__all__ = ["DrainingServer", "run"]


class DrainingServer(RestingServer):
    """A uvicorn server whose first SIGTERM/SIGINT drains the node before exiting."""

    def __init__(self, config: uvicorn.Config, node: Node) -> None:
        super().__init__(config)
        self._node = node
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._node.draining or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._node.draining = True  # /readyz fails from this instant
        self._loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        self._draining = asyncio.create_task(self._drain_then_exit(sig))

    async def _drain_then_exit(self, sig: int) -> None:
        try:
            await self._node.drain()
        finally:
            super().handle_exit(sig, None)


def run() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging("gateway", settings.log_format, settings.log_level)
    setup_observability("gateway", settings.redis_url)
    app = build_app(settings)
    node: Node = app.state.node
    # Messages above the protocol limit but under this are refused with the
    # documented `frame_too_large` close; beyond it the server closes with 1009.
    max_message = settings.max_frame_bytes * 4
    own_sockets = settings.ws_implementation == "tocsin"
    limits = settings.http_limits()
    http: type[asyncio.Protocol] = (
        upgrade_protocol(
            app.state.socket_endpoint,
            SOCKET_PATH,
            SocketTimings(
                ping_interval=settings.heartbeat_interval,
                pong_timeout=settings.heartbeat_timeout,
                close_timeout=settings.close_timeout,
                read_rate=settings.read_rate_bytes,
                read_burst=settings.read_burst_bytes,
            ),
            max_message,
            limits,
        )
        if own_sockets
        else LimitedHttpToolsProtocol.with_limits(limits)
    )
    config = uvicorn.Config(
        SocketsFirst(instrument_app(app), app.state.socket_endpoint),
        host=settings.host,
        port=settings.port or DEFAULT_PORT,
        http=http,
        # uvicorn considers upgrades only with a WebSocket implementation configured;
        # with the gateway's own, it never runs (every upgrade is answered above).
        ws="websockets-sansio" if own_sockets else settings.ws_implementation,
        ws_max_size=max_message,
        ws_ping_interval=settings.heartbeat_interval,
        ws_ping_timeout=settings.heartbeat_timeout,
        ws_per_message_deflate=False,
        log_config=None,
        access_log=False,
        lifespan="on",
        backlog=4096,
        timeout_graceful_shutdown=int(settings.close_timeout) + 1,
        ssl_certfile=settings.tls_cert_file or None,
        ssl_keyfile=settings.tls_key_file or None,
    )
    server = DrainingServer(config, node)
    if settings.metrics_port:
        serve_in_thread(metrics_app(), settings.host, settings.metrics_port)
    tune_gc()
    server.run()
