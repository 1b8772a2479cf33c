"""The queue layer: the one module that knows Dramatiq's Redis layout.

Everything about queues goes through here: the key layout and message
encoding (`_layout`), enqueue with a wake-up (`enqueue`), one worker's fetch,
ack, requeue, dead-letter and dead-worker recovery (`worker`, Lua scripts in
`worker/`), messages for later as durable due-times (`due`, and `broker`, whose
delayed enqueue writes one), the wake-up tokens of Dramatiq's own enqueues
(`wakeup`), the consumer every service runs, batched or not, with the
broker's middleware around each message (`consumer`), and the queue depth and
age gauges each running consumer registers (`gauges`). The contract tests run
Dramatiq's own RedisBroker against it in both directions, so a Dramatiq
upgrade that changes the layout fails a test.
"""

from __future__ import annotations

from tocsin.common.queue._layout import (
    WAKEUP_TOKENS_KEPT,
    QueueKeys,
    dead_letter_keys,
    encode_message,
    queue_keys,
)
from tocsin.common.queue._settings import QueueConsumerSettings
from tocsin.common.queue.consumer import BatchHandler, Consumer, Delivery
from tocsin.common.queue.enqueue import enqueue
from tocsin.common.queue.wakeup import QueueWakeup
from tocsin.common.queue.worker import QueueWorker, Recovery

__all__ = [
    "WAKEUP_TOKENS_KEPT",
    "BatchHandler",
    "Consumer",
    "Delivery",
    "QueueConsumerSettings",
    "QueueKeys",
    "QueueWakeup",
    "QueueWorker",
    "Recovery",
    "dead_letter_keys",
    "encode_message",
    "enqueue",
    "queue_keys",
]
