"""Dramatiq's RedisBroker with one change: a delayed message is a durable due-time.

Dramatiq keeps a delayed message (Retries' backoff, `send_with_options(delay=)`)
on a delay queue (`{queue}.DQ`) that each consumer releases when due; Tocsin's
own timers (group flushes, the notifier's retry backoff) are due-times
(`tocsin.common.queue.due`). Two mechanisms for one job: here the delayed
enqueue goes to the queue's due set too, and the due-time movers every
`Consumer` runs hand it over when due, busy or idle. The due set is the one
that can also be written inside a larger atomic step (a Lua script), which a
delay queue read and rewritten from Python cannot.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import uuid4

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import TimeLimit, default_middleware

from tocsin.common.queue._time_limit import RestingTimeLimit
from tocsin.common.queue.due import DueTimes

__all__ = ["DueTimeBroker"]


class DueTimeBroker(RedisBroker):
    """A RedisBroker whose delayed enqueues go to the queue's due set (see the module).

    Its default middleware is Dramatiq's, with `RestingTimeLimit` for `TimeLimit`
    (no wake-up a second at rest).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("middleware") is None:
            kwargs["middleware"] = [
                RestingTimeLimit() if m is TimeLimit else m() for m in default_middleware
            ]
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._dues: dict[str, DueTimes] = {}
        self._dues_lock = threading.Lock()

    def due_times(self, queue: str) -> DueTimes:
        """The due-times of `queue`, through this broker's client."""
        with self._dues_lock:
            due = self._dues.get(queue)
            if due is None:
                due = self._dues[queue] = DueTimes(self.client, queue)
            return due

    def enqueue(
        self, message: dramatiq.Message[Any], *, delay: int | None = None
    ) -> dramatiq.Message[Any]:
        if not delay:
            return super().enqueue(message, delay=delay)
        # As RedisBroker.enqueue, with the due set instead of the delay queue: a fresh
        # Redis id (a retry is the same message again), the same hooks around it.
        redis_id = str(uuid4())
        message = message.copy(options={"redis_message_id": redis_id})
        self.emit_before("enqueue", message, delay)
        self.due_times(message.queue_name).schedule_encoded(
            redis_id, message.encode(), delay / 1000
        )
        self.emit_after("enqueue", message, delay)
        return message
