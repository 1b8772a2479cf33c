"""One worker's side of the queues: fetch, ack, requeue, dead-letter, recover.

Every operation is one Lua script (`worker/*.lua`, each with its key layout in
a header comment) over Dramatiq's own Redis layout, so a message enqueued by
Dramatiq's RedisBroker is fetched here and a message left behind here is
recovered by Dramatiq's maintenance, and the other way round; the contract
tests (`tests/test_queue_contract.py`) hold both directions.

What differs from Dramatiq's consumer is when things happen: messages are
fetched and acked many at a time, a dead worker's messages are recovered on a
clock (`recover`, every `Recovery.interval`) rather than on a random share of
commands, and delayed messages are durable due-times (`queue.due`) rather than
entries in a consumer's memory, where a reconnect used to strand them.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import dramatiq
from dramatiq.common import current_millis
from redis import Redis

from tocsin.common import keys
from tocsin.common.queue._layout import WAKEUP_TOKENS_KEPT, dead_letter_keys, queue_keys

__all__ = ["QueueWorker", "Recovery"]

log = logging.getLogger(__name__)


def _script(redis: Redis, name: str) -> Any:
    text = resources.files("tocsin.common.queue").joinpath(f"worker/{name}.lua").read_text()
    return redis.register_script(text)


@dataclass(frozen=True, slots=True)
class Recovery:
    """How fast a dead worker's messages come back.

    Each consumer beats every `interval` seconds and, in the same call, requeues
    the messages of any worker silent for `timeout_ms`: a SIGKILLed worker's
    messages run again within `timeout_ms / 1000 + interval` seconds (10 s by
    default). A live worker must beat within `timeout_ms` even while busy, which
    is why the beat has a thread of its own, at least four times per timeout.
    """

    timeout_ms: int = 8_000
    # How long dead letters are kept (Dramatiq's default: a week).
    dead_letter_ttl_ms: int = 7 * 86_400_000

    @property
    def interval(self) -> float:
        """Seconds between beats: a quarter of the timeout, at most 2 s (an idle cost)."""
        return min(2.0, self.timeout_ms / 4000)


class QueueWorker:
    """One worker id's view of the queues it consumes (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str = keys.DRAMATIQ_NAMESPACE,
        worker_id: str | None = None,
        recovery: Recovery | None = None,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        # Host and pid first, so an operator (or a chaos scenario) can tell whose ack set it is.
        self.worker_id = (
            worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        )
        self.recovery = recovery or Recovery()
        self._heartbeats = f"{namespace}:__heartbeats__"
        self._fetch = _script(redis, "fetch")
        self._ack = _script(redis, "ack")
        self._requeue = _script(redis, "requeue")
        self._nack = _script(redis, "nack")
        self._recover = _script(redis, "recover")

    def acks_key(self, queue: str) -> str:
        """The set of messages of `queue` this worker fetched and has not acked."""
        return f"{self.namespace}:__acks__.{self.worker_id}.{queue}"

    def fetch(
        self, queue: str, count: int, *, drop_wakeups: bool = True, held: Iterable[str] = ()
    ) -> list[dramatiq.Message[Any]]:
        """Up to `count` messages of `queue`: first those this worker's ack set holds
        beyond `held` (the redis ids its caller is running or keeps), fetched by a
        call whose reply was lost; then waiting ones, moved into the ack set."""
        names = queue_keys(queue)
        raw: list[bytes] = self._fetch(
            keys=[
                names.pending,
                names.messages,
                self.acks_key(queue),
                self._heartbeats,
                names.wakeup,
                names.weights,
                names.backlog,
            ],
            args=[current_millis(), self.worker_id, count, "1" if drop_wakeups else "0", *held],
        )
        if raw[0]:
            log.warning(
                "took back %d messages of %s that a fetch whose reply was lost left held",
                raw[0],
                queue,
            )
        return [dramatiq.Message.decode(raw[i]) for i in range(2, len(raw), 2)]

    def ack(self, queue: str, ids: Sequence[str]) -> int:
        """Settle `ids` (redis message ids) of `queue`; how many were still held."""
        if not ids:
            return 0
        names = queue_keys(queue)
        return int(
            self._ack(
                keys=[
                    self.acks_key(queue),
                    names.messages,
                    self._heartbeats,
                    names.weights,
                    names.backlog,
                ],
                args=[current_millis(), self.worker_id, *ids],
            )
        )

    def requeue(self, queue: str, ids: Sequence[str]) -> int:
        """Give `ids` back to the tail of `queue`, waking an idle consumer."""
        if not ids:
            return 0
        names = queue_keys(queue)
        return int(
            self._requeue(
                keys=[names.pending, names.messages, self.acks_key(queue), names.wakeup],
                args=[WAKEUP_TOKENS_KEPT, *ids],
            )
        )

    def nack(self, queue: str, message_id: str) -> bool:
        """Move a fetched message to the queue's dead letters."""
        names = queue_keys(queue)
        dead, dead_messages = dead_letter_keys(queue)
        return bool(
            self._nack(
                keys=[
                    self.acks_key(queue),
                    names.messages,
                    dead,
                    dead_messages,
                    names.weights,
                    names.backlog,
                ],
                args=[current_millis(), message_id],
            )
        )

    def beat(self, queues: Iterable[str] = (), *, idle: bool = False) -> int:
        """Refresh this worker's heartbeat and recover dead workers' messages; how many.

        `idle`: the caller runs and keeps nothing, so whatever this worker's ack sets
        of `queues` hold was fetched by a call whose reply was lost; a wake-up token
        is pushed for each such queue, and the next fetch takes them back.
        """
        return int(
            self._recover(
                keys=[self._heartbeats],
                args=[
                    current_millis(),
                    self.worker_id,
                    self.recovery.timeout_ms,
                    self.namespace,
                    keys.queue_wakeup(""),
                    WAKEUP_TOKENS_KEPT,
                    self.recovery.dead_letter_ttl_ms,
                    "1" if idle else "0",
                    *queues,
                ],
            )
        )

    def leave(self) -> None:
        """Forget this worker's heartbeat (after requeueing what it held)."""
        self.redis.zrem(self._heartbeats, self.worker_id)
