"""An async WebSocket client that reconnects and resumes from its last offsets.

`EventStream` speaks the gateway protocol (docs/protocol.md): it authenticates
with a bearer token, subscribes, yields `Event`s, renews its token in band when
the gateway warns of expiry, and on any reconnect-class close or network error
backs off (exponential, full jitter), reconnects to the next gateway URL and
resubscribes every channel from its last offset, skipping any offset it has
already yielded. Do-not-reconnect closes raise typed errors.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from tocsin.client._exceptions import (
    AuthenticationError,
    FatalCloseError,
    ProtocolError,
    SubscriptionError,
    TokenExpiredError,
)

__all__ = ["Backoff", "Event", "EventStream", "Reset", "Subscribed", "is_reconnect_class"]

SUBPROTOCOL = "tocsin.v1"
TOKEN_EXPIRED = 4003
_AUTH_CODES = frozenset({4401, 4402})
_SUBSCRIBE_ERRORS = frozenset({"forbidden", "bad_channel", "too_many_subscriptions"})


def is_reconnect_class(code: int) -> bool:
    """Whether a close code asks the client to reconnect (everything outside 4400-4499)."""
    return not 4400 <= code <= 4499


@dataclass(frozen=True)
class Event:
    """One event frame."""

    channel: str
    offset: int
    epoch: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Reset:
    """The gateway could not replay what a channel missed (trimmed, or a new epoch).

    Reload the state through the REST API; events after `offset` follow.
    """

    channel: str
    epoch: str
    offset: int


@dataclass(frozen=True)
class Subscribed:
    """The gateway's answer to a subscribe: events of `channel` after `offset` follow.

    An application that loads its state through the REST API does so after the
    first one (`on_subscribed`), not before: an event published between an
    earlier read and the subscription would be in neither. `recovered` is false
    when what the channel missed could not be replayed (a `Reset` too).
    """

    channel: str
    epoch: str
    offset: int
    recovered: bool


@dataclass
class Backoff:
    """Exponential back-off with full jitter: uniform in [0, min(cap, base * factor**n)]."""

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
ResetHandler = Callable[[Reset], Awaitable[None] | None]
SubscribedHandler = Callable[[Subscribed], Awaitable[None] | None]


class EventStream:
    """Connects to a gateway, subscribes, and yields events across reconnects.

    `token` is a string or an async callable returning a fresh token; the
    callable is asked on every connect and whenever the gateway warns that the
    token is about to expire. `positions` holds each channel's (epoch, offset).
    `on_reset` is called for each `Reset`, `on_subscribed` for every `subscribed`
    answer (on every connect, recovered or not), before the channel's events
    that follow it are yielded.
    """

    def __init__(
        self,
        urls: str | Iterable[str],
        token: str | TokenSource,
        channels: Iterable[str] = ("alerts",),
        backoff: Backoff | None = None,
        *,
        on_reset: ResetHandler | None = None,
        on_subscribed: SubscribedHandler | None = None,
        heartbeat_interval: float = 25.0,
        heartbeat_timeout: float = 10.0,
        open_timeout: float = 10.0,
    ) -> None:
        self._urls = [urls] if isinstance(urls, str) else list(urls)
        if not self._urls:
            raise ValueError("at least one gateway URL is required")
        self._token = token
        self._channels = list(channels)
        self._backoff = backoff or Backoff()
        self._on_reset = on_reset
        self._on_subscribed = on_subscribed
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._open_timeout = open_timeout
        self.positions: dict[str, tuple[str, int]] = {}
        self.reconnects = 0
        self.close_codes: list[int] = []
        self.resets: list[Reset] = []
        self.url: str | None = None

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
            # A full gateway refuses the upgrade with 503 and says how long to wait.
            wait_at_least = 0.0
            try:
                async for event in self._session(url):
                    yield event
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else 1006
                reason = exc.rcvd.reason if exc.rcvd else ""
                self.close_codes.append(code)
                self._raise_if_fatal(code, reason)
            except websockets.InvalidStatus as exc:
                self.close_codes.append(1006)
                wait_at_least = _retry_after(exc.response.headers.get("Retry-After"))
            except (TimeoutError, OSError, websockets.InvalidHandshake, json.JSONDecodeError):
                self.close_codes.append(1006)
            self.reconnects += 1
            await asyncio.sleep(wait_at_least + self._backoff.next_delay())

    def _raise_if_fatal(self, code: int, reason: str) -> None:
        if code == TOKEN_EXPIRED and isinstance(self._token, str):
            raise TokenExpiredError(code, reason or "token_expired")
        if is_reconnect_class(code):
            return
        if code in _AUTH_CODES:
            raise AuthenticationError(code, reason)
        if code in (4400, 4403, 4413):
            raise ProtocolError(code, reason)
        raise FatalCloseError(code, reason)

    async def _session(self, url: str) -> AsyncIterator[Event]:
        token = await self._current_token()
        async with websockets.connect(
            url,
            additional_headers={"authorization": f"Bearer {token}"},
            subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
            open_timeout=self._open_timeout,
            ping_interval=self._heartbeat_interval,
            ping_timeout=self._heartbeat_timeout,
            max_size=2**22,
        ) as socket:
            self.url = url
            # Frames before `welcome` can only be an error explaining the close to come.
            while json.loads(await socket.recv()).get("type") != "welcome":
                pass
            self._backoff.reset()
            for channel in self._channels:
                request: dict[str, Any] = {"type": "subscribe", "channel": channel}
                if channel in self.positions:
                    request["epoch"], request["since"] = self.positions[channel]
                await socket.send(json.dumps(request))
            async for raw in socket:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "event":
                    channel = frame["channel"]
                    offset = int(frame["offset"])
                    epoch = str(frame["epoch"])
                    last = self.positions.get(channel)
                    if last is not None and last[0] == epoch and offset <= last[1]:
                        continue  # already yielded, before a reconnect
                    self.positions[channel] = (epoch, offset)
                    yield Event(channel, offset, epoch, frame["data"])
                elif kind == "subscribed":
                    await self._subscribed(frame)
                elif kind == "token_expiring" and not isinstance(self._token, str):
                    fresh = await self._token()
                    await socket.send(json.dumps({"type": "refresh", "token": fresh}))
                elif kind == "error" and frame.get("code") in _SUBSCRIBE_ERRORS:
                    raise SubscriptionError(
                        str(frame.get("channel", "")), str(frame["code"]), str(frame["message"])
                    )

    async def _subscribed(self, frame: dict[str, Any]) -> None:
        channel = str(frame["channel"])
        position = (str(frame["epoch"]), int(frame["offset"]))
        recovered = bool(frame.get("recovered", True))
        if recovered:
            self.positions.setdefault(channel, position)
        else:
            self.positions[channel] = position
            reset = Reset(channel, *position)
            self.resets.append(reset)
            await _call(self._on_reset, reset)
        await _call(self._on_subscribed, Subscribed(channel, *position, recovered))


async def _call(handler: Callable[[Any], Awaitable[None] | None] | None, value: Any) -> None:
    """Call an application's handler, sync or async, if it gave one."""
    if handler is not None:
        outcome = handler(value)
        if inspect.isawaitable(outcome):
            await outcome


def _retry_after(value: str | None) -> float:
    """Seconds a `Retry-After` header asks for (delay-seconds only; capped at a minute)."""
    try:
        return min(60.0, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0
