"""The gateway app: the `/ws` endpoint, the browser SDK, the dashboard API and ops routes.

`/ws` is a plain ASGI endpoint (no per-message Starlette wrapper on the hot
path): it admits the socket (drain, origin, connection limit), authenticates
it by one of four paths, checks the token's `read` scope (the REST API's rule
for reading alerts), then hands it to a `Session`.

A socket counts against `TOCSIN_MAX_CONNECTIONS` from its admission on, not
only once authenticated; sockets waiting for their `auth` frame also have
their own, smaller cap (`TOCSIN_MAX_UNAUTHENTICATED`), so upgrades that never
authenticate cannot crowd out the clients that do. A full gateway refuses the
upgrade itself (HTTP 503 with Retry-After), before any WebSocket exists: in a
reconnect storm an accept, an error frame and a close handshake per refused
client cost the full gateway as much as a connect.

So does a gateway whose event loop runs late (`TOCSIN_ADMISSION_LAG`, the loop's
last samples smoothed): in a storm, every handshake it takes on delays the pongs and
deliveries of the sockets it holds, and a client whose handshake outlasts its own
timeout retries and costs it again. Refused at once, the client waits the
Retry-After and its jittered back-off, or tries the next gateway: the storm spreads
over time and replicas instead of piling up on a saturated loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from importlib import resources

import msgspec
import redis.asyncio as redis_async
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from tocsin.common.auth import Claims, TokenError, TokenVerifier
from tocsin.common.broker import build_broker
from tocsin.common.ops import ops_routes
from tocsin.common.redis import async_client
from tocsin.gateway.api import ApiContext, dashboard_routes
from tocsin.gateway.api.openapi import OPENAPI_PATH, openapi_document
from tocsin.gateway.broker import RedisBroker
from tocsin.gateway.handshake import query_token
from tocsin.gateway.history import ChannelLog
from tocsin.gateway.hub import Hub
from tocsin.gateway.metrics import Stats, StatsCollector, register
from tocsin.gateway.node import Node
from tocsin.gateway.protocol import CloseCode, error_frame
from tocsin.gateway.session import Session, wire_of
from tocsin.gateway.settings import GatewaySettings
from tocsin.gateway.websocket import LoopLag, SocketProtocol

__all__ = ["CLIENT_SCRIPT_PATH", "SOCKET_PATH", "SUBPROTOCOL", "SocketsFirst", "build_app"]

SUBPROTOCOL = "tocsin.v1"
# Browsers cannot set headers on a WebSocket; they may offer the token as a
# second subprotocol, `bearer.<jwt>`, next to `tocsin.v1`.
_BEARER_SUBPROTOCOL = "bearer."
CLIENT_SCRIPT_PATH = "/sdk/tocsin-client.js"
SOCKET_PATH = "/ws"

_auth_decoder = msgspec.json.Decoder(dict[str, object])
# The refusal of a full gateway, and how long its client should wait before trying again
# (the SDK adds its jittered back-off, so a storm does not come back at once).
_FULL = CloseCode.TOO_MANY_CONNECTIONS.reason
_FULL_RETRY_AFTER = 2
# The refusal of a gateway whose loop lags: a loop catches up within a second or so once
# it stops taking handshakes on; the SDK's back-off spreads the retries beyond that.
_BUSY = "overloaded"
_BUSY_RETRY_AFTER = 1
_CONSOLE_MEDIA = {"js": "text/javascript", "css": "text/css"}


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _offered_subprotocols(scope: Scope) -> list[str]:
    offered = scope.get("subprotocols") or []
    return [str(p).strip() for p in offered]


def _token_at_upgrade(scope: Scope) -> str:
    """The token the upgrade request carries, by header, subprotocol or query, or ""."""
    header = _header(scope, b"authorization")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    for offered in _offered_subprotocols(scope):
        if offered.startswith(_BEARER_SUBPROTOCOL):
            return offered[len(_BEARER_SUBPROTOCOL) :]
    return query_token(scope.get("query_string", b""))


class SocketEndpoint:
    """The ASGI endpoint of `/ws`."""

    def __init__(self, node: Node, lag: LoopLag) -> None:
        self._node = node
        self._lag = lag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self._node
        settings = node.settings
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        if node.draining:
            await self._deny(scope, send, 503, "draining")
            return
        lag = self._lag
        lag.mark()  # samples the loop from the first upgrade on, whichever server runs
        if settings.admission_lag and lag.recent > settings.admission_lag:
            node.stats.limit_breaches["loop_lag"] += 1
            await self._deny(scope, send, 503, _BUSY, retry_after=_BUSY_RETRY_AFTER)
            return
        origin = _header(scope, b"origin")
        if origin and settings.allowed_origins and origin not in settings.allowed_origins:
            node.stats.limit_breaches["origin"] += 1
            await self._accept_and_close(scope, send, CloseCode.ORIGIN_FORBIDDEN)
            return
        if len(node.sessions) + node.unauthenticated >= settings.max_connections:
            node.stats.limit_breaches["connections"] += 1
            await self._deny(scope, send, 503, _FULL, retry_after=_FULL_RETRY_AFTER)
            return
        token = _token_at_upgrade(scope)
        if not token and node.unauthenticated >= settings.max_unauthenticated:
            node.stats.limit_breaches["unauthenticated"] += 1
            await self._deny(scope, send, 503, _FULL, retry_after=_FULL_RETRY_AFTER)
            return
        await send({"type": "websocket.accept", "subprotocol": self._subprotocol(scope)})
        if not token:
            node.unauthenticated += 1
            try:
                framed = await self._token_from_auth_frame(receive)
            finally:
                node.unauthenticated -= 1
            if framed is None:
                await self._close(send, CloseCode.TOKEN_MISSING, "token_missing", "no token")
                return
            token = framed
        try:
            claims: Claims = node.verifier.verify(token)
        except TokenError as exc:
            code = {
                "token_missing": CloseCode.TOKEN_MISSING,
                "token_expired": CloseCode.TOKEN_EXPIRED,
            }.get(exc.code, CloseCode.TOKEN_INVALID)
            await self._close(send, code, exc.code, str(exc))
            return
        if "read" not in claims.scopes:
            await self._close(
                send,
                CloseCode.INSUFFICIENT_SCOPE,
                "insufficient_scope",
                "the `read` scope is required",
            )
            return
        if len(node.sessions) >= settings.max_connections:
            # Checked again: the limit may have filled while this socket authenticated.
            node.stats.limit_breaches["connections"] += 1
            reason = CloseCode.TOO_MANY_CONNECTIONS.reason
            await self._close(send, CloseCode.TOO_MANY_CONNECTIONS, reason, reason)
            return
        session = Session(node, claims, send, receive, wire_of(scope))
        # Nothing reads the upgrade's headers, subprotocols or extensions again, and the
        # scope lives as long as the socket: five containers fewer per socket to keep
        # and for every young-generation collection to walk.
        scope["headers"] = ()
        scope.pop("subprotocols", None)
        scope.pop("extensions", None)
        # This frame lives as long as the socket: keep nothing of the handshake in it.
        del claims, token, connect
        await session.run()

    def _subprotocol(self, scope: Scope) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in _offered_subprotocols(scope) else None

    async def _token_from_auth_frame(self, receive: Receive) -> str | None:
        """The token of the first frame, `{"type": "auth", "token": ...}`, if it comes in time."""
        try:
            # Up to a quarter longer, at random: sockets that connected together (a wave
            # of hostile upgrades) would otherwise all time out in the same loop turn.
            timeout = self._node.settings.auth_timeout * (1 + random.random() / 4)
            message = await asyncio.wait_for(receive(), timeout)
        except TimeoutError:
            return None
        raw = message.get("text") or message.get("bytes") or ""
        try:
            frame = _auth_decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        token = frame.get("token")
        if frame.get("type") != "auth" or not isinstance(token, str) or not token:
            return None
        return token

    async def _close(self, send: Send, code: CloseCode, error: str, message: str) -> None:
        """Tell the client why (an `error` frame with the precise code), then close."""
        self._node.stats.disconnects[code.reason] += 1
        # Bounded: a client that reads nothing (its pongs backed up) would hold the send,
        # and the socket, for ever; past the close timeout the endpoint returns and the
        # server side drops the connection.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._node.settings.close_timeout):
                await send({"type": "websocket.send", "text": error_frame(error, message)})
                await send({"type": "websocket.close", "code": int(code), "reason": code.reason})

    async def _accept_and_close(self, scope: Scope, send: Send, code: CloseCode) -> None:
        # Accepting first lets browsers see the close code, which a refused
        # handshake would hide from them.
        await send({"type": "websocket.accept", "subprotocol": self._subprotocol(scope)})
        await self._close(send, code, code.reason, code.reason)

    async def _deny(
        self, scope: Scope, send: Send, status: int, reason: str, *, retry_after: int = 1
    ) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):
            body = reason.encode()
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"text/plain"),
                        (b"retry-after", str(retry_after).encode()),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": int(CloseCode.SERVER_RESTART)})


class SocketsFirst:
    """Hands `/ws` upgrades straight to the socket endpoint, everything else to `app`.

    Each middleware layer an upgrade passes through keeps a coroutine frame alive
    for the socket's whole life; around Starlette's stack that is ~3 KiB a socket.
    """

    def __init__(self, app: ASGIApp, endpoint: SocketEndpoint) -> None:
        self._app = app
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == SOCKET_PATH:
            await self._endpoint(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def build_node(
    settings: GatewaySettings, verifier: TokenVerifier, redis: redis_async.Redis
) -> Node:
    stats = Stats()
    pubsub_redis = redis_async.Redis.from_url(
        settings.redis_url,
        retry=AsyncRetry(NoBackoff(), 0),
        retry_on_error=[],
        socket_keepalive=True,
    )
    log = ChannelLog(redis)
    broker = RedisBroker(
        redis,
        pubsub_redis,
        log,
        stats,
        probe_interval=settings.probe_interval,
        probe_timeout=settings.probe_timeout,
    )
    hub = Hub(broker, stats)
    return Node(settings, hub, log, verifier, stats)


def build_app(settings: GatewaySettings) -> Starlette:
    verifier = TokenVerifier.from_settings(settings)
    redis = async_client(settings.redis_url)
    node = build_node(settings, verifier, redis)
    collector = StatsCollector(node.stats, node.queue_depths, node.deliveries, SocketProtocol.lag)
    register(collector)
    static = resources.files("tocsin.gateway").joinpath("static")
    client_script = static.joinpath("tocsin-client.js").read_bytes()
    console_page = static.joinpath("console.html").read_bytes()
    # The console's modules and style sheet, read once; nothing else is served from there.
    console_files = {
        entry.name: (entry.read_bytes(), _CONSOLE_MEDIA[entry.name.rsplit(".", 1)[-1]])
        for entry in static.joinpath("console").iterdir()
        if entry.name.rsplit(".", 1)[-1] in _CONSOLE_MEDIA
    }
    api_document = msgspec.json.encode(openapi_document())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.node = node
        await node.hub.start()
        yield
        await node.hub.stop()
        await context.resources.aclose()
        await context.pipelined.close()
        await redis.aclose()

    async def ready() -> tuple[bool, dict[str, str]]:
        if node.draining:
            return False, {"gateway": "draining"}
        try:
            await redis.ping()
        except Exception as exc:
            return False, {"redis": f"unreachable: {exc}"}
        if not node.hub.healthy:
            return False, {"redis": "ok", "pubsub": "probes are not coming back"}
        return True, {"redis": "ok", "pubsub": "ok"}

    async def sdk(request: Request) -> Response:
        return Response(
            client_script,
            media_type="text/javascript",
            headers={"cache-control": "public, max-age=300"},
        )

    async def console(request: Request) -> Response:
        # The page holds no secret: the token stays in the URL fragment and the browser.
        return Response(console_page, media_type="text/html", headers={"cache-control": "no-cache"})

    async def console_file(request: Request) -> Response:
        found = console_files.get(request.path_params["name"])
        if found is None:
            return Response(b"not found", status_code=404, media_type="text/plain")
        return Response(found[0], media_type=found[1], headers={"cache-control": "no-cache"})

    async def openapi(request: Request) -> Response:
        return Response(api_document, media_type="application/json")

    context = ApiContext(settings, redis, build_broker(settings.redis_url), verifier)
    endpoint = SocketEndpoint(node, SocketProtocol.lag)
    routes: list[BaseRoute] = [
        WebSocketRoute(SOCKET_PATH, endpoint),
        Route(CLIENT_SCRIPT_PATH, sdk, methods=["GET"]),
        Route("/", console, methods=["GET"]),
        Route(OPENAPI_PATH, openapi, methods=["GET"]),
        Route("/console/{name}", console_file, methods=["GET"]),
        *dashboard_routes(context),
        *ops_routes(ready, metrics=not settings.metrics_port),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.node = node
    app.state.socket_endpoint = endpoint
    return app
