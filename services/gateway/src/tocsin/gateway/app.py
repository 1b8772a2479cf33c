"""The gateway app: the `/ws` endpoint and the ops routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tocsin.common import keys
from tocsin.common.auth import TokenError, TokenVerifier
from tocsin.common.broker import build_broker
from tocsin.common.events import InvalidChannelError, check_channel
from tocsin.common.ops import ops_routes
from tocsin.common.redis import async_client
from tocsin.gateway.api import ApiContext, dashboard_routes
from tocsin.gateway.hub import Hub
from tocsin.gateway.settings import GatewaySettings

__all__ = ["build_app"]

CLOSE_SLOW_CONSUMER = 4008
CLOSE_BAD_TOKEN = 4401


class Connection:
    """One socket's outbound queue; a full queue marks it as a slow consumer."""

    def __init__(self, limit: int) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(limit)
        self.overflowed = asyncio.Event()

    def offer(self, frame: bytes) -> None:
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed.set()


def _token_from(websocket: WebSocket) -> str:
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return websocket.query_params.get("token", "")


def build_app(settings: GatewaySettings) -> Starlette:
    verifier = TokenVerifier(
        secret=settings.jwt_secret,
        public_key=settings.jwt_public_key,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    redis = async_client(settings.redis_url)
    hub = Hub(redis)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.stop()
        await redis.aclose()

    async def ws_endpoint(websocket: WebSocket) -> None:
        try:
            claims = verifier.verify(_token_from(websocket))
        except TokenError as exc:
            await websocket.close(CLOSE_BAD_TOKEN, exc.code)
            return
        await websocket.accept()
        connection = Connection(settings.outbound_queue_frames)
        channels: set[str] = set()
        await websocket.send_json(
            {
                "type": "welcome",
                "connection_id": uuid.uuid4().hex,
                "server_time": time.time(),
                "subject": claims.subject,
            }
        )

        async def write() -> None:
            while True:
                frame = await connection.queue.get()
                await websocket.send_text(frame.decode())

        writer = asyncio.create_task(write())
        try:
            while True:
                message = await websocket.receive_json()
                kind = message.get("type")
                channel = str(message.get("channel", ""))
                try:
                    check_channel(channel)
                except InvalidChannelError as exc:
                    await websocket.send_json(
                        {"type": "error", "code": "bad_channel", "message": str(exc)}
                    )
                    continue
                if kind == "subscribe":
                    await hub.join(channel, connection)
                    channels.add(channel)
                    meta: dict[Any, Any] = await redis.hgetall(keys.channel_meta(channel))
                    await websocket.send_json(
                        {
                            "type": "subscribed",
                            "channel": channel,
                            "offset": int(meta.get(b"offset", 0)),
                            "epoch": meta.get(b"epoch", b"").decode(),
                            "recovered": True,
                        }
                    )
                elif kind == "unsubscribe":
                    await hub.leave(channel, connection)
                    channels.discard(channel)
        except (WebSocketDisconnect, json.JSONDecodeError):
            pass
        finally:
            writer.cancel()
            for channel in channels:
                await hub.leave(channel, connection)

    async def ready() -> tuple[bool, dict[str, str]]:
        try:
            await redis.ping()
        except Exception as exc:
            return False, {"redis": f"unreachable: {exc}"}
        return True, {"redis": "ok"}

    context = ApiContext(settings, redis, build_broker(settings.redis_url), verifier)
    routes = [WebSocketRoute("/ws", ws_endpoint), *dashboard_routes(context), *ops_routes(ready)]
    return Starlette(routes=routes, lifespan=lifespan)
