"""`Position`: where one subscription stands, and the merge of frames by offset.

Pure bookkeeping, no I/O: the session asks the position what to do with each
frame and does it (send, drop, start a recovery, announce a new epoch). A
subscription that is recovering (a `since` on subscribe, or a catch-up after a
pub/sub reconnect or a hole in the live flow) buffers live frames while the
stream is read; `finish` then hands them back to be merged, so the client sees
every offset of an epoch once, in order.
"""

from __future__ import annotations

import enum

from tocsin.gateway.frames import Frame

__all__ = ["Position", "Step"]


class Step(enum.Enum):
    """What the session does with a frame after the position has taken it."""

    SEND = "send"
    """The next frame of the subscription: send it."""
    SKIP = "skip"
    """Already seen (an overlap of history and live flow): drop it."""
    BUFFERED = "buffered"
    """Held until the running recovery finishes."""
    GAP = "gap"
    """A hole in the live flow: the frame is buffered, recover from the stream."""
    NEW_EPOCH = "new_epoch"
    """The stream restarted under a new epoch: announce it unrecovered, then send."""


class Position:
    """A subscription's epoch and last offset sent; `buffer` holds live frames
    while it recovers (None when it does not)."""

    __slots__ = ("buffer", "epoch", "offset")

    def __init__(self, epoch: str = "", offset: int = 0, *, recovering: bool = True) -> None:
        self.epoch = epoch
        self.offset = offset
        # A subscription starts recovering: its first head read decides where it stands.
        self.buffer: list[Frame] | None = [] if recovering else None

    @property
    def recovering(self) -> bool:
        return self.buffer is not None

    def live(self, frame: Frame) -> Step:
        """Take a frame from the live flow (pub/sub).

        `Session.deliver` inlines the in-order case (the next offset of the same
        epoch, not recovering) before calling this; the result is the same."""
        buffer = self.buffer
        if buffer is not None:
            buffer.append(frame)
            return Step.BUFFERED
        if frame.epoch == self.epoch:
            if frame.offset <= self.offset:
                return Step.SKIP
            if frame.offset > self.offset + 1 and self.epoch:
                self.buffer = [frame]
                return Step.GAP
        return self.merge(frame)

    def merge(self, frame: Frame) -> Step:
        """Take a frame read from the stream, or one buffered during a recovery."""
        if frame.epoch != self.epoch:
            restarted = bool(self.epoch)
            self.epoch = frame.epoch
            self.offset = frame.offset
            return Step.NEW_EPOCH if restarted else Step.SEND
        if frame.offset <= self.offset:
            return Step.SKIP
        self.offset = frame.offset
        return Step.SEND

    def recover(self) -> bool:
        """Start buffering the live flow for a catch-up; False if one is running."""
        if self.buffer is not None:
            return False
        self.buffer = []
        return True

    def restart_at(self, epoch: str, offset: int) -> None:
        """Stand at `offset` of `epoch`, as the recovery's head read decided."""
        self.epoch, self.offset = epoch, offset

    def finish(self) -> list[Frame]:
        """End the recovery; return the live frames buffered meanwhile, to `merge`."""
        buffered, self.buffer = self.buffer or [], None
        return buffered

    def drop_buffer(self) -> None:
        """Forget buffered frames (the socket is closing as a slow consumer)."""
        self.buffer = None
