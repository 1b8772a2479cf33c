"""The dead-letter queue: notifications that could not be delivered, kept for an operator.

An entry keeps the queue message that failed (actor and arguments), so
`retry` puts the very same notification back, with its attempts reset.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from redis import Redis

from tocsin.common import keys

__all__ = ["DeadLetter", "DeadLetters"]


class DeadLetter(msgspec.Struct, kw_only=True):
    """One dead-lettered message and why."""

    id: str
    actor: str
    args: list[Any]
    reason: str
    error: str = ""
    receiver: str = ""
    attempts: int = 0
    dead_at: float = 0.0


Requeue = Callable[[str, list[Any]], None]


class DeadLetters:
    """List, add, retry and purge dead letters in one Redis hash."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def add(
        self,
        actor: str,
        args: list[Any],
        reason: str,
        *,
        error: str = "",
        receiver: str = "",
        attempts: int = 0,
        letter_id: str = "",
    ) -> DeadLetter:
        letter = DeadLetter(
            id=letter_id or uuid.uuid4().hex,
            actor=actor,
            args=args,
            reason=reason,
            error=error[:1000],
            receiver=receiver,
            attempts=attempts,
            dead_at=time.time(),
        )
        self._redis.hset(keys.NOTIFY_DEAD_LETTERS, letter.id, msgspec.json.encode(letter))
        return letter

    def letters(self) -> list[DeadLetter]:
        raw: dict[bytes, bytes] = self._redis.hgetall(keys.NOTIFY_DEAD_LETTERS)  # type: ignore[assignment]
        letters = [msgspec.json.decode(v, type=DeadLetter) for v in raw.values()]
        return sorted(letters, key=lambda letter: letter.dead_at)

    def count(self) -> int:
        return int(self._redis.hlen(keys.NOTIFY_DEAD_LETTERS))

    def retry(self, requeue: Requeue, ids: list[str] | None = None) -> list[str]:
        """Requeue the named letters (all when `ids` is None); returns the ids requeued."""
        done = []
        for letter in self.letters():
            if ids is not None and letter.id not in ids:
                continue
            # HDEL first: of two operators retrying at once, one requeues.
            if self._redis.hdel(keys.NOTIFY_DEAD_LETTERS, letter.id):
                requeue(letter.actor, letter.args)
                done.append(letter.id)
        return done

    def purge(self, ids: list[str] | None = None) -> int:
        if ids is None:
            count = self.count()
            self._redis.delete(keys.NOTIFY_DEAD_LETTERS)
            return count
        return int(self._redis.hdel(keys.NOTIFY_DEAD_LETTERS, *ids)) if ids else 0
