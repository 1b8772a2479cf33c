"""Wake-up tokens for enqueues made through Dramatiq's own `broker.enqueue`.

Enqueues made by the queue layer's scripts push their token themselves; this
middleware does the same after `RedisBroker.enqueue`, so a message sent by
`actor.send` or `broker.enqueue` (gateway actions, Dramatiq's retries) wakes an
idle consumer at once. A delayed message wakes it too: the consumer then reads
the delay queue and sleeps until the message is due.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from redis import Redis

from tocsin.common.queue._layout import WAKEUP_TOKENS_KEPT, queue_keys

__all__ = ["QueueWakeup", "wait_for_wakeup"]


def wait_for_wakeup(redis: Redis, keys: list[str], wanted: float) -> None:
    """Block on `keys` for up to `wanted` seconds, or until a token arrives.

    The pop is kept well inside the client's socket timeout: one cut off by it
    is retried on a new connection while the server may still hand the next
    token to the abandoned one, so the token that announced work is swallowed
    and the retry sleeps through it (and each cut-off pop costs a reconnect).
    """
    socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
    if socket_timeout:
        wanted = min(wanted, float(socket_timeout) / 2)
    redis.blpop(keys, timeout=max(wanted, 0.001))


class QueueWakeup(Middleware):
    """Pushes a wake-up token for the message's queue after each enqueue."""

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        client = getattr(broker, "client", None)
        if client is None or delay:
            # A delayed message wakes its consumers when its due-time mover moves it.
            return
        key = queue_keys(q_name(message.queue_name)).wakeup
        pipe = client.pipeline(transaction=False)
        pipe.rpush(key, "1")
        pipe.ltrim(key, -WAKEUP_TOKENS_KEPT, -1)
        pipe.execute()
