"""Publishing events to channels with offsets, epochs and a capped delivery log.

The processor publishes through `EventPublisher`; the gateway reads the live
flow from `tocsin:live:{channel}` and history from `tocsin:stream:{channel}`.
A published frame is complete JSON, ready to be written to a WebSocket as is:
`{"type":"event","channel":...,"offset":...,"epoch":...,"data":...,"traceparent":...}`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.client import Pipeline, Redis

from tocsin.common import keys
from tocsin.common.errors import InvalidChannelError

__all__ = [
    "CHANNEL_PATTERN",
    "DEFAULT_STREAM_CAP",
    "SYSTEM_CHANNEL",
    "EventPublisher",
    "InvalidChannelError",
    "alert_channels",
    "check_channel",
]

# Channel names travel inside JSON built by Lua, so they are restricted to
# characters that need no escaping. `alert_channels` is the one channel rule:
# the processor's apply step publishes to exactly what it returns.
CHANNEL_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
# Where Tocsin's own findings go: health, patterns, volume storms.
SYSTEM_CHANNEL = "system"
DEFAULT_STREAM_CAP = 10_000

_PUBLISH_LUA = resources.files("tocsin.common").joinpath("events/publish.lua").read_text()


def check_channel(channel: str) -> str:
    if not CHANNEL_PATTERN.match(channel):
        raise InvalidChannelError(f"invalid channel name {channel!r}")
    return channel


@functools.lru_cache(maxsize=4096)  # a few services, severities and teams, on every event
def _channel_value(value: str) -> str:
    """A label value made safe for a channel name: other characters become `_`."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", value)[:100] or "_"


def alert_channels(service: str, severity: str, team: str) -> list[str]:
    """The channels an alert's events go to."""
    channels = ["alerts", f"alerts.severity.{_channel_value(severity)}"]
    if service:
        channels.append(f"alerts.service.{_channel_value(service)}")
    if team:
        channels.append(f"alerts.team.{_channel_value(team)}")
    return channels


class EventPublisher:
    """Publishes one event to several channels in one atomic script call."""

    def __init__(self, redis: Redis, stream_cap: int = DEFAULT_STREAM_CAP) -> None:
        self._script = redis.register_script(_PUBLISH_LUA)
        self._stream_cap = stream_cap

    def publish(
        self,
        channels: Sequence[str],
        data_json: str,
        traceparent: str = "",
        *,
        pipeline: Pipeline | None = None,
    ) -> Any:
        """Publish `data_json` (already JSON) to `channels`.

        Returns `[offset_1..offset_n, epoch_1..epoch_n]`, or queues the call on
        `pipeline` when given.
        """
        script_keys: list[str] = []
        for channel in channels:
            check_channel(channel)
            script_keys.append(keys.channel_meta(channel))
            script_keys.append(keys.channel_stream(channel))
        args: list[Any] = [self._stream_cap, data_json, traceparent, *channels]
        args.extend(keys.live(channel) for channel in channels)
        return self._script(keys=script_keys, args=args, client=pipeline)
