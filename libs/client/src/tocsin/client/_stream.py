"""An async WebSocket client that reconnects and resumes from its last offsets."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from tocsin.client._exceptions import FatalCloseError

__all__ = ["Backoff", "Event", "EventStream"]

# Close codes after which reconnecting cannot help (bad token, forbidden,
# protocol violation); everything else is retried with back-off.
FATAL_CLOSE_CODES = frozenset({4400, 4401, 4403, 4413})


@dataclass(frozen=True)
class Event:
    """One event frame."""

    channel: str
    offset: int
    epoch: str
    data: dict[str, Any]


@dataclass
class Backoff:
    """Exponential back-off with full jitter."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 20.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


TokenSource = Callable[[], Awaitable[str]]


class EventStream:
    """Connects to a gateway, subscribes, and yields events across reconnects.

    The last offset and epoch of every channel are kept, so a reconnect asks
    for exactly what was missed.
    """

    def __init__(
        self,
        urls: str | Iterable[str],
        token: str | TokenSource,
        channels: Iterable[str] = ("alerts",),
        backoff: Backoff | None = None,
    ) -> None:
        self._urls = [urls] if isinstance(urls, str) else list(urls)
        self._token = token
        self._channels = list(channels)
        self._backoff = backoff or Backoff()
        self.positions: dict[str, tuple[str, int]] = {}
        self.reconnects = 0

    async def _current_token(self) -> str:
        if isinstance(self._token, str):
            return self._token
        return await self._token()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def events(self) -> AsyncGenerator[Event, None]:
        """Yield events forever; close it (`contextlib.aclosing`) to disconnect."""
        attempt = 0
        while True:
            url = self._urls[attempt % len(self._urls)]
            attempt += 1
            try:
                async for event in self._session(url):
                    yield event
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else 1006
                reason = exc.rcvd.reason if exc.rcvd else ""
                if code in FATAL_CLOSE_CODES:
                    raise FatalCloseError(code, reason) from None
            except (TimeoutError, OSError, websockets.InvalidHandshake):
                pass
            self.reconnects += 1
            await asyncio.sleep(self._backoff.next_delay())

    async def _session(self, url: str) -> AsyncIterator[Event]:
        token = await self._current_token()
        async with websockets.connect(
            url,
            additional_headers={"authorization": f"Bearer {token}"},
            open_timeout=10,
            max_size=2**22,
        ) as socket:
            welcome = json.loads(await socket.recv())
            if welcome.get("type") != "welcome":
                raise OSError(f"unexpected first frame {welcome!r}")
            for channel in self._channels:
                request: dict[str, Any] = {"type": "subscribe", "channel": channel}
                if channel in self.positions:
                    request["since"] = self.positions[channel][1]
                    request["epoch"] = self.positions[channel][0]
                await socket.send(json.dumps(request))
            self._backoff.reset()
            async for raw in socket:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "event":
                    channel = frame["channel"]
                    offset = int(frame["offset"])
                    epoch = str(frame["epoch"])
                    last = self.positions.get(channel)
                    if last is not None and last[0] == epoch and offset <= last[1]:
                        continue
                    self.positions[channel] = (epoch, offset)
                    yield Event(channel, offset, epoch, frame["data"])
                elif kind == "subscribed":
                    channel = frame["channel"]
                    if channel not in self.positions or not frame.get("recovered", True):
                        self.positions[channel] = (str(frame["epoch"]), int(frame["offset"]))
