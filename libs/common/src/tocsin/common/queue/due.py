"""Durable due-times: messages that must reach a queue later, kept in Redis until due.

A worker's memory is no place for a message meant for later: Dramatiq's
in-memory delay queue loses track of its messages across a Redis restart. A
message for later is written to Redis instead, and movers running in every
consumer process hand it to its queue when it is due:

| key | type | holds |
| --- | --- | --- |
| `tocsin:due:{queue}` | sorted set | message id by due time (ms, Redis's clock) |
| `tocsin:due:{queue}:msgs` | hash | message id -> encoded message (`encode_message`) |
| `tocsin:due:{queue}:wake` | list | wake-up tokens the movers block on |

`move.lua` takes a due message out of the set and puts it on the queue in one
atomic step, so it is always in exactly one of the two. A mover sleeps until
the next due time, or until a scheduling step pushes a token because its entry
is now the earliest: no polling while nothing is due.

A Lua step that must schedule a message as part of a larger atomic change (the
notifier's grouping) is built with `script_with_functions`, declares
`due_keys(queue).as_list()` in its KEYS and calls `due_schedule(...)` with a
message encoded in Python by `encode_message`; `queue_push(...)` hands a message
to a queue at once the same way, with `queue_keys(queue).as_list()`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.common import current_millis, dq_name
from redis import Redis
from redis.exceptions import RedisError

from tocsin.common import keys
from tocsin.common.queue._layout import WAKEUP_TOKENS_KEPT, encode_message, queue_keys
from tocsin.common.queue.wakeup import wait_for_wakeup
from tocsin.common.telemetry import TRACEPARENT, current_traceparent

__all__ = [
    "DueKeys",
    "DueMover",
    "DueTimes",
    "due_keys",
    "script_with_functions",
]

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent / "due"
_FUNCTIONS = (_HERE / "functions.lua").read_text()

# Most messages one move hands over; a bigger backlog is moved by the next call at once.
MOVE_BATCH = 500
# Longest a mover sleeps without looking: it bounds the delay a lost wake-up token
# (a replica killed right after popping it) can cause, at one call per this many seconds.
MAX_SLEEP_SECONDS = 5.0
# Pause after a Redis error before the mover tries again.
ERROR_PAUSE_SECONDS = 0.5
# How late the server may end a blocking pop: it looks at pops' timeouts on its timer,
# `hz` times a second (10 by default, 1 for `tocsin dev`'s server). The last stretch
# before a due time is waited here instead, so timers are on time whatever the `hz`.
SERVER_TICK_SECONDS = 1.0


def script_with_functions(source: str) -> str:
    """`source` with the shared queue functions (`queue_push`, `due_schedule`) defined first."""
    return f"{_FUNCTIONS}\n{source}"


@dataclass(frozen=True, slots=True)
class DueKeys:
    """The Redis keys of one queue's due messages."""

    entries: str  # sorted set: message id by due time, ms
    messages: str  # hash: message id -> encoded message
    wake: str  # list of wake-up tokens the movers block on

    def as_list(self) -> list[str]:
        """The keys in the order scripts declare them."""
        return [self.entries, self.messages, self.wake]


def due_keys(queue: str) -> DueKeys:
    """The due-time keys of `queue`."""
    entries = f"{keys.PREFIX}due:{queue}"
    return DueKeys(entries=entries, messages=f"{entries}:msgs", wake=f"{entries}:wake")


class DueTimes:
    """Schedules messages for later on one queue, and moves those that are due."""

    def __init__(self, redis: Redis, queue: str) -> None:
        self.queue = queue
        self.keys = due_keys(queue)
        self._redis = redis
        self._schedule = redis.register_script(
            script_with_functions((_HERE / "schedule.lua").read_text())
        )
        self._move = redis.register_script(script_with_functions((_HERE / "move.lua").read_text()))

    def encode(self, actor: str, args: tuple[Any, ...], message_id: str) -> bytes:
        """`actor(*args)` as a message of this queue, in the current trace (if any).

        A timer's message runs later, in another process perhaps: the traceparent
        option keeps what it does (a group flush, a retry) in the alert's trace.
        """
        traceparent = current_traceparent()
        options = {TRACEPARENT: traceparent} if traceparent else None
        return encode_message(self.queue, actor, args, message_id=message_id, options=options)

    def schedule(
        self, actor: str, args: tuple[Any, ...], delay: float, *, message_id: str = ""
    ) -> str:
        """Put `actor(*args)` on the queue `delay` seconds from now; returns the message id.

        A given `message_id` makes a repeated call (a redelivery) replace, not add.
        """
        message_id = message_id or uuid.uuid4().hex
        self.schedule_encoded(message_id, self.encode(actor, args, message_id), delay)
        return message_id

    def schedule_encoded(self, message_id: str, data: bytes, delay: float) -> None:
        """Put an already encoded message (Dramatiq's `Message.encode()`, its Redis id
        `message_id`) on the queue `delay` seconds from now: what a consumer needs to
        turn Dramatiq's delayed enqueue (a retry's backoff) into a durable due-time."""
        self._schedule(
            keys=self.keys.as_list(),
            args=[message_id, data, max(0, int(delay * 1000)), WAKEUP_TOKENS_KEPT],
        )

    def move(self, limit: int = MOVE_BATCH) -> tuple[int, float | None]:
        """Hand every due message to the queue: (how many, seconds until the next, if any)."""
        moved, wait_ms = self._move(
            keys=[*self.keys.as_list()[:2], *queue_keys(self.queue).as_list()],
            args=[limit, WAKEUP_TOKENS_KEPT],
        )
        return int(moved), None if int(wait_ms) < 0 else int(wait_ms) / 1000

    def pending(self) -> int:
        """How many messages wait for their due time."""
        return int(self._redis.zcard(self.keys.entries))

    def adopt_delay_queue(self, limit: int = 1000) -> int:
        """Move what Dramatiq's own delay queue (`{queue}.DQ`) holds into the due set.

        Nothing Tocsin runs writes there any more (`DueTimeBroker`), but a
        message written before, or by a plain RedisBroker, is kept, due when its
        `eta` said. Each is scheduled before it leaves the delay queue: a crash
        in between runs it twice (handlers are idempotent), never not at all.
        Returns how many moved.
        """
        delayed = queue_keys(dq_name(self.queue))
        ids: list[Any] = self._redis.lrange(delayed.pending, 0, limit - 1)
        if not ids:
            return 0
        datas: list[Any] = self._redis.hmget(delayed.messages, ids)
        now = current_millis()
        for redis_id, data in zip(ids, datas, strict=True):
            if data is not None:
                message = dramatiq.Message.decode(data)
                eta = int(message.options.get("eta") or now)
                options = {k: v for k, v in message.options.items() if k != "eta"}
                undelayed = message.copy(queue_name=self.queue, options=options)
                self.schedule_encoded(
                    redis_id.decode(), undelayed.encode(), max(0, eta - now) / 1000
                )
            pipe = self._redis.pipeline(transaction=False)
            pipe.lrem(delayed.pending, 0, redis_id)
            pipe.hdel(delayed.messages, redis_id)
            pipe.execute()
        return len(ids)


class DueMover:
    """A thread that moves some queues' due messages, sleeping until the next is due.

    Every `Consumer` runs one over the queues it consumes, so whatever consumes
    a queue also moves its due messages.
    """

    def __init__(
        self,
        due: DueTimes | Sequence[DueTimes],
        redis: Redis,
        *,
        max_sleep: float = MAX_SLEEP_SECONDS,
    ) -> None:
        self._dues = [due] if isinstance(due, DueTimes) else list(due)
        self._redis = redis
        self._max_sleep = max_sleep
        self._stop = threading.Event()
        queues = ",".join(d.queue for d in self._dues)
        self._thread = threading.Thread(target=self.run, name=f"due-mover-{queues}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        failing = False
        queues = ",".join(d.queue for d in self._dues)
        wake_keys = [d.keys.wake for d in self._dues]
        while not self._stop.is_set():
            try:
                sleep, backlog, timed = self._max_sleep, False, False
                for due in self._dues:
                    moved, wait = due.move()
                    backlog = backlog or moved >= MOVE_BATCH
                    if wait is not None and wait < sleep:
                        sleep, timed = wait, True
                if backlog:
                    continue
                # The pop ends early when a scheduling step pushes a token (a new earliest
                # entry). Within a server tick of a due time the wait is this thread's own:
                # a new entry due sooner is then late by less than that tick.
                if not timed:
                    wait_for_wakeup(self._redis, wake_keys, sleep)
                elif sleep > SERVER_TICK_SECONDS:
                    wait_for_wakeup(self._redis, wake_keys, sleep - SERVER_TICK_SECONDS)
                elif sleep > 0:
                    self._stop.wait(sleep)
                if failing:
                    log.info("due-time mover reconnected", extra={"queue": queues})
                    failing = False
            except Exception as exc:
                # Never let the thread die: a mover that stopped would strand every timer.
                if not failing:
                    log.warning(
                        "due-time mover failed (%s); retrying",
                        "Redis unreachable" if isinstance(exc, RedisError) else "error",
                        exc_info=True,
                        extra={"queue": queues},
                    )
                    failing = True
                self._stop.wait(ERROR_PAUSE_SECONDS)
