"""An echo application behind the gateway's own WebSocket server, for the Autobahn fuzzer.

`python -m tests.conformance.echo_server PORT` serves `/ws` with the server side of
RFC 6455 that the gateway runs (`tocsin.gateway.websocket`, with the same HTTP
limits), but answers every message with itself instead of Tocsin's protocol: the
fuzzer judges the framing, not the application. The message limit is raised to
what the fuzzer's largest cases send (16 MiB).
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any

import uvicorn

from tocsin.common.httplimits import HttpLimits
from tocsin.gateway.websocket import SocketTimings, upgrade_protocol

Message = MutableMapping[str, Any]
MAX_MESSAGE = 32 * 1024 * 1024


async def echo(scope: Message, receive: Any, send: Any) -> None:
    """Accept, then send back each message as it came (text as text, bytes as bytes)."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        except ConnectionResetError:
            return  # the server closed it (a fault the fuzzer sent): the disconnect follows


async def nothing_else(scope: Message, receive: Any, send: Any) -> None:
    """Every other request: 200 (it is up; and the lifespan: nothing to start)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"echo"})


def main(port: int) -> None:
    timings = SocketTimings(ping_interval=3600, pong_timeout=60, close_timeout=5)
    protocol = upgrade_protocol(echo, "/ws", timings, MAX_MESSAGE, HttpLimits())
    uvicorn.run(
        nothing_else,
        host="127.0.0.1",
        port=port,
        http=protocol,
        ws="websockets-sansio",  # uvicorn considers upgrades only with one configured
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
