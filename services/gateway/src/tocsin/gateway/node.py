"""`Node`: one gateway process's shared parts, wired together once at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from tocsin.common.auth import TokenVerifier
from tocsin.gateway.history import ChannelLog
from tocsin.gateway.hub import Hub
from tocsin.gateway.metrics import Stats
from tocsin.gateway.protocol import CloseCode
from tocsin.gateway.settings import GatewaySettings

__all__ = ["Node", "OpenSocket"]

log = logging.getLogger(__name__)


class OpenSocket(Protocol):
    """What the node needs of a session: it counts, measures and closes them.

    A protocol, so that `session` depends on `node` and never the reverse."""

    @property
    def delivered(self) -> int: ...

    @property
    def queued_frames(self) -> int: ...

    def close(self, code: CloseCode) -> None: ...


@dataclass
class Node:
    """Settings, the hub, the channel log, counters and the open sessions of this process."""

    settings: GatewaySettings
    hub: Hub
    log: ChannelLog
    verifier: TokenVerifier
    stats: Stats
    sessions: set[OpenSocket] = field(default_factory=set)
    # Sockets admitted and still waiting for their `auth` frame.
    unauthenticated: int = 0
    draining: bool = False
    # Bounds the Redis reads of a reconnect storm: every socket resumes at once.
    recovery_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(32))

    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def forget(self, session: OpenSocket) -> None:
        """Drop a closed session; wakes `drain` when it was the last."""
        self.sessions.discard(session)
        if not self.sessions:
            self._idle.set()

    def deliveries(self) -> int:
        """Event frames handed to sockets, by closed and open sessions."""
        return self.stats.deliveries + sum(s.delivered for s in list(self.sessions))

    def queue_depths(self) -> list[int]:
        return [session.queued_frames for session in list(self.sessions)]

    async def drain(self) -> None:
        """Refuse new sockets and close the open ones with `server_restart`, spread
        over `drain_window` so their reconnects do not land on the other gateways
        at once; return when all are gone or the close timeout has passed too."""
        self.draining = True
        sessions = list(self.sessions)
        window = self.settings.drain_window
        log.info("draining %d sockets over %.1fs", len(sessions), window)
        started = time.monotonic()
        for index, session in enumerate(sessions):
            due = started + window * index / max(len(sessions), 1)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            session.close(CloseCode.SERVER_RESTART)
        remaining = started + window + self.settings.close_timeout - time.monotonic()
        if self.sessions and remaining > 0:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), remaining)
        log.info("drained; %d sockets left", len(self.sessions))
