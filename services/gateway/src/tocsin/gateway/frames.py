"""`Frame`: one server frame, encoded once per process and shared by every socket.

Event frames arrive as final JSON from the publish script; the gateway reads
their channel, offset and epoch without decoding the whole object and forwards
the bytes as received.
"""

from __future__ import annotations

import time
from datetime import datetime

from tocsin.gateway.wire import text_frame_header

__all__ = ["Frame", "control_frame", "event_frame"]

_OFFSET = b'"offset":'
_EPOCH = b'"epoch":"'
_LAST_SEEN = '"last_seen":"'
_RECEIVED_AT = '"received_at":'


class Frame:
    """A frame ready to write: its text plus what delivery and metrics need to know."""

    __slots__ = ("channel", "epoch", "offset", "received_at", "size", "text", "unobserved", "wire")

    def __init__(
        self, text: str, raw: bytes, channel: str = "", offset: int = 0, epoch: str = ""
    ) -> None:
        self.text = text
        self.size = len(raw)
        # The whole WebSocket frame, encoded once and written as is to every socket.
        self.wire = text_frame_header(len(raw)) + raw
        self.channel = channel
        self.offset = offset
        self.epoch = epoch
        self.received_at = time.time()
        # Latency is observed at the first socket send of each live event only,
        # which keeps the histogram's cost per event, not per delivery.
        self.unobserved = bool(channel)

    def ingest_time(self) -> float | None:
        """When ingest received the alert this event is about, if the event says.

        The processor puts a numeric `received_at` at the top of event data;
        older events only carry the alert's RFC 3339 `last_seen`.
        """
        text = self.text
        start = text.find(_RECEIVED_AT)
        if start >= 0:
            start += len(_RECEIVED_AT)
            end = start
            while end < len(text) and text[end] not in ",}":
                end += 1
            try:
                return float(text[start:end])
            except ValueError:
                return None
        start = text.find(_LAST_SEEN)
        if start < 0:
            return None
        start += len(_LAST_SEEN)
        end = text.find('"', start)
        try:
            return datetime.fromisoformat(text[start:end]).timestamp()
        except ValueError:
            return None


def event_frame(channel: str, raw: bytes) -> Frame:
    """The frame of one published event, as the publish script wrote it.

    Raises `ValueError` when `raw` lacks an offset or an epoch.
    """
    start = raw.index(_OFFSET) + len(_OFFSET)
    end = raw.index(b",", start)
    offset = int(raw[start:end])
    epoch_start = raw.index(_EPOCH, end) + len(_EPOCH)
    epoch_end = raw.index(b'"', epoch_start)
    epoch = raw[epoch_start:epoch_end].decode()
    return Frame(raw.decode(), raw, channel, offset, epoch)


def control_frame(text: str) -> Frame:
    """A frame that is not an event (welcome, subscribed, error, ...)."""
    return Frame(text, text.encode())
