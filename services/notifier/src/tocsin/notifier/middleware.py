"""Dramatiq middleware of the notifier: a cap on deliveries of one message.

A message whose processing crashes the worker (OOM, segfault, SIGKILL) comes
back after the heartbeat timeout, without Dramatiq's retry count moving. This
counts deliveries per message id in Redis and dead-letters a message seen more
than `max_deliveries` times instead of letting it loop forever.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, SkipMessage
from redis import Redis

from tocsin.common import keys
from tocsin.notifier import metrics
from tocsin.notifier.deadletters import DeadLetters

__all__ = ["DeliveryLimit"]

log = logging.getLogger(__name__)

# One command per message instead of a pipeline of two: this runs before every step.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""
# How long a message's delivery count is kept.
_KEEP_SECONDS = 86400


class DeliveryLimit(Middleware):
    """Dead-letters a message delivered more than `max_deliveries` times."""

    def __init__(self, redis: Redis, dead_letters: DeadLetters, max_deliveries: int) -> None:
        self._count = redis.register_script(_COUNT)
        self._dead_letters = dead_letters
        self._max = max_deliveries

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        count = self._count(keys=[keys.notify_deliveries(message.message_id)], args=[_KEEP_SECONDS])
        if int(count) <= self._max:
            return
        log.error(
            "message delivered %d times, dead-lettering it",
            count,
            extra={"message_id": message.message_id, "actor": message.actor_name},
        )
        self._dead_letters.add(
            message.actor_name,
            list(message.args),
            "too-many-deliveries",
            error=f"delivered {count} times",
            attempts=int(count),
            letter_id=message.message_id,
        )
        metrics.DEAD_LETTERED.labels("unknown", "too-many-deliveries").inc()
        raise SkipMessage()
