"""Enqueue with a wake-up, for code that writes a queue without Dramatiq's broker.

The same three writes every Tocsin enqueue makes (see `_layout`), as one
script, so a consumer woken by the token always finds the message.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import dramatiq
from redis import Redis

from tocsin.common.queue._layout import WAKEUP_TOKENS_KEPT, encode_message, queue_keys

__all__ = ["enqueue"]

_ENQUEUE_LUA = resources.files("tocsin.common.queue").joinpath("enqueue/enqueue.lua").read_text()


def enqueue(
    redis: Redis,
    queue: str,
    actor: str,
    args: tuple[Any, ...],
    *,
    message_id: str,
    options: dict[str, Any] | None = None,
) -> dramatiq.Message[Any]:
    """Enqueue a message for `actor` on `queue` under `message_id`; returns it as enqueued."""
    data = encode_message(queue, actor, args, message_id=message_id, options=options)
    names = queue_keys(queue)
    redis.eval(_ENQUEUE_LUA, 3, *names.as_list(), message_id, data, WAKEUP_TOKENS_KEPT)
    return dramatiq.Message.decode(data)
