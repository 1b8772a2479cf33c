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


# How long past a pop's own timeout its reply may take before the client gives up on it:
# the server ends a pop on its timer tick (1 / `hz` seconds: 1 s for `tocsin dev`'s
# server, 0.1 s by default), plus scheduling delays on a loaded machine.
_REPLY_GRACE_SECONDS = 5.0


def wait_for_wakeup(redis: Redis, keys: list[str], wanted: float) -> None:
    """Block on `keys` for up to `wanted` seconds, or until a token arrives.

    The reply is read with its own bound, `wanted` plus `_REPLY_GRACE_SECONDS`,
    not the client's socket timeout (redis-py's default is 5 s and is not in
    the pool's settings): a pop cut off by the socket timeout is retried on a
    new connection while the server may still hand the next token to the
    abandoned one, so the token that announced work is swallowed and the retry
    sleeps through it (and each cut-off pop costs a reconnect). A server that
    does not answer by then (frozen) raises redis-py's `TimeoutError`.
    """
    wanted = max(wanted, 0.001)
    pool = redis.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_command("BLPOP", *keys, wanted)  # type: ignore[no-untyped-call]
        connection.read_response(timeout=wanted + _REPLY_GRACE_SECONDS)
    finally:
        pool.release(connection)


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
